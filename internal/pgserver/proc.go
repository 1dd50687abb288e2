package pgserver

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is one run of a child process: a postmaster or a pgbouncer.
type proc struct {
	cmd     *exec.Cmd
	logFile *os.File
	exited  chan struct{} // closed when cmd has exited
	err     error         // result of cmd.Wait, set before exited is closed
}

// startProc starts cmd with its output to logFile, which the returned proc
// owns, and a goroutine waiting for it; on error it closes logFile.
func startProc(cmd *exec.Cmd, logFile *os.File) (*proc, error) {
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, logFile: logFile, exited: make(chan struct{})}
	go p.wait()
	return p, nil
}

// wait waits for the process to exit. It runs in a goroutine of its own
// while the process lives; internal/testmain knows it by this name.
func (p *proc) wait() {
	p.err = p.cmd.Wait()
	close(p.exited)
}

// kill SIGKILLs the process p and its children, and returns once p has
// been reaped and none of them is alive. PostgreSQL's children call setsid,
// each leading a process group of its own, so they are found as the
// children of p while p is stopped (and cannot fork) and killed group by
// group, together with the group of p for those that have not yet left it.
func (p *proc) kill() error {
	pid := p.cmd.Process.Pid
	groups := map[int]bool{pid: true}
	// Through os.Process, which knows whether pid is still p's.
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err == nil {
		for _, ps := range procStats() {
			if ps.ppid == pid {
				groups[ps.pid] = true
			}
		}
		for g := range groups {
			_ = syscall.Kill(-g, syscall.SIGKILL)
			_ = syscall.Kill(g, syscall.SIGKILL)
		}
	}
	_ = p.cmd.Process.Kill()
	<-p.exited
	deadline := time.Now().Add(stopTimeout)
	for {
		left := survivors(groups)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgserver: processes %v still alive %v after SIGKILL", left, stopTimeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStat is what kill needs of /proc/PID/stat.
type procStat struct {
	pid, ppid, pgrp int
	state           string // R, S, D, Z (zombie), ...
}

// procStats returns the processes listed in /proc, or nil if it cannot be
// read.
func procStats() []procStat {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var stats []procStat
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 {
			continue
		}
		ps := procStat{pid: pid, state: f[0]}
		ps.ppid, _ = strconv.Atoi(f[1])
		ps.pgrp, _ = strconv.Atoi(f[2])
		stats = append(stats, ps)
	}
	return stats
}

// survivors returns the processes of the given process groups that are
// alive. Zombies do not count: they have closed their sockets and released
// their shared memory, and wait for a parent to reap them, possibly forever
// when init does not.
func survivors(groups map[int]bool) []int {
	var left []int
	for _, ps := range procStats() {
		if groups[ps.pgrp] && ps.state != "Z" && ps.state != "X" {
			left = append(left, ps.pid)
		}
	}
	return left
}
