package netfault

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// chunkSize is the most a reader reads at once.
	chunkSize = 32 << 10
	// queueLen is how many chunks a direction holds between its reader and
	// its writer (delayed by latency or held by a blackhole).
	queueLen = 256
)

// aLongTimeAgo is the deadline that makes every read and write on a socket
// fail at once: Blackhole sets it to interrupt the flow's I/O.
var aLongTimeAgo = time.Unix(1, 0)

// errStopped is what a flow's I/O returns once the flow is stopped.
var errStopped = errors.New("netfault: flow stopped")

// chunk is what a reader read from one side, on its way to the other.
type chunk struct {
	b   []byte
	at  time.Time // when it was read
	eof bool      // the sender closed its side after b
}

// flow is one accepted connection and, once connected, its connection to
// the target.
type flow struct {
	p      *Proxy
	client *net.TCPConn
	hung   bool // accepted in Hang mode: never forwards
	ctx    context.Context
	cancel context.CancelFunc // called by stop

	mu      sync.Mutex
	cond    sync.Cond    // on mu: signals the ends of held, stopped and busy
	server  *net.TCPConn // nil until connected
	held    bool         // blackholed
	busy    int          // reads and writes under way
	stopped bool
}

// newFlow makes the flow of c, accepted in mode.
func newFlow(p *Proxy, c *net.TCPConn, mode Mode) *flow {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flow{p: p, client: c, hung: mode == Hang, ctx: ctx, cancel: cancel}
	f.cond.L = &f.mu
	f.held = mode == Blackholed
	return f
}

// run is the flow's supervisor: it connects to the target when the flow may
// forward, runs the four pumps, and stops the flow when they have returned.
func (f *flow) run() {
	defer f.p.wg.Done()
	defer f.stop(false)
	if f.hung {
		<-f.ctx.Done()
		return
	}
	if !f.forwarding() {
		return
	}
	server, ok := f.connect()
	if !ok {
		return
	}
	up := make(chan chunk, queueLen)
	down := make(chan chunk, queueLen)
	var wg sync.WaitGroup
	wg.Add(4)
	go func() { defer wg.Done(); f.read(f.client, up, &f.p.st.fromClient) }()
	go func() { defer wg.Done(); f.write(up, server, &f.p.st.toTarget) }()
	go func() { defer wg.Done(); f.read(server, down, &f.p.st.fromTarget) }()
	go func() { defer wg.Done(); f.write(down, f.client, &f.p.st.toClient) }()
	wg.Wait()
}

// connect dials the target. When that fails the client is reset: its
// connect to the proxy succeeded already, so a reset is the nearest the
// proxy can come to the target's refusal.
func (f *flow) connect() (*net.TCPConn, bool) {
	var d net.Dialer
	c, err := d.DialContext(f.ctx, "tcp", f.p.target)
	if err != nil {
		if f.ctx.Err() == nil {
			f.p.st.dialErrors.Add(1)
			f.stop(true)
		}
		return nil, false
	}
	server := c.(*net.TCPConn)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		_ = server.Close()
		return nil, false
	}
	f.server = server
	if f.held {
		_ = server.SetDeadline(aLongTimeAgo)
	}
	f.p.st.connected.Add(1)
	return server, true
}

// read reads from src into q until EOF, which it sends on as a chunk, or an
// error, which aborts the flow, and counts the bytes read. While the flow is
// held it does not read.
func (f *flow) read(src *net.TCPConn, q chan<- chunk, count *atomic.Int64) {
	buf := make([]byte, chunkSize)
	for {
		n, err := f.do(func() (int, error) { return src.Read(buf) })
		if errors.Is(err, errStopped) {
			return
		}
		count.Add(int64(n))
		if n > 0 && !f.send(q, chunk{b: bytes.Clone(buf[:n]), at: time.Now()}) {
			return
		}
		switch {
		case err == nil, errors.Is(err, os.ErrDeadlineExceeded):
			// A deadline error is Blackhole interrupting the read:
			// the next do waits for Heal.
		case errors.Is(err, io.EOF):
			f.send(q, chunk{at: time.Now(), eof: true})
			return
		default:
			f.abort()
			return
		}
	}
}

// send puts c on q and reports false if the flow stopped first.
func (f *flow) send(q chan<- chunk, c chunk) bool {
	select {
	case q <- c:
		return true
	case <-f.ctx.Done():
		return false
	}
}

// write delivers the chunks of q to dst, each when it is due, until the EOF
// chunk, which half-closes dst, or an error, which aborts the flow.
func (f *flow) write(q <-chan chunk, dst *net.TCPConn, count *atomic.Int64) {
	for {
		var c chunk
		select {
		case c = <-q:
		case <-f.ctx.Done():
			return
		}
		if !f.p.lat.due(f.ctx, c.at) {
			return
		}
		if err := f.deliver(dst, c, count); err != nil {
			f.abort()
			return
		}
		if c.eof {
			return
		}
	}
}

// deliver writes c to dst, waiting while the flow is held, and counts the
// bytes written. An EOF chunk ends with dst.CloseWrite, so the peer reads
// EOF as the sender closed.
func (f *flow) deliver(dst *net.TCPConn, c chunk, count *atomic.Int64) error {
	for b := c.b; len(b) > 0; {
		n, err := f.do(func() (int, error) { return dst.Write(b) })
		if errors.Is(err, errStopped) {
			return err
		}
		count.Add(int64(n))
		b = b[n:]
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
	if !c.eof {
		return nil
	}
	return f.whenForwarding(dst.CloseWrite)
}

// forwarding waits while the flow is held and reports whether it may go on:
// false once it is stopped.
func (f *flow) forwarding() bool {
	return f.whenForwarding(func() error { return nil }) == nil
}

// whenForwarding waits while the flow is held, then calls fn with f.mu held
// so no hold starts meanwhile; fn must not block. It returns errStopped if
// the flow stops first.
func (f *flow) whenForwarding(fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.held && !f.stopped {
		f.cond.Wait()
	}
	if f.stopped {
		return errStopped
	}
	return fn()
}

// do waits while the flow is held, then runs op, a read or a write on one of
// the flow's sockets, counted as under way so that hold can wait for it. It
// returns errStopped if the flow stops first.
func (f *flow) do(op func() (int, error)) (int, error) {
	if err := f.whenForwarding(func() error { f.busy++; return nil }); err != nil {
		return 0, err
	}
	n, err := op()
	f.mu.Lock()
	f.busy--
	if f.busy == 0 {
		f.cond.Broadcast()
	}
	f.mu.Unlock()
	return n, err
}

// hold blackholes the flow: its pumps stop reading and writing, and the
// reads and writes under way are interrupted by a deadline in the past;
// quiesce waits for them. It reports false if the flow was held, hung or
// stopped already.
func (f *flow) hold() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hung || f.held || f.stopped {
		return false
	}
	f.held = true
	f.setDeadline(aLongTimeAgo)
	return true
}

// quiesce waits until no read or write is under way on the flow.
func (f *flow) quiesce() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.busy > 0 {
		f.cond.Wait()
	}
}

// release ends a hold: the pumps go on where they stopped.
func (f *flow) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.held {
		return
	}
	f.held = false
	f.setDeadline(time.Time{})
	f.cond.Broadcast()
}

// setDeadline sets the deadline of both sockets; f.mu must be held.
func (f *flow) setDeadline(t time.Time) {
	_ = f.client.SetDeadline(t)
	if f.server != nil {
		_ = f.server.SetDeadline(t)
	}
}

// abort resets the flow after an error or a reset on one side.
func (f *flow) abort() {
	if f.stop(true) {
		f.p.st.aborted.Add(1)
	}
}

// stop ends the flow: it closes both sockets (with SO_LINGER 0 when reset,
// so the peers get RST), which ends the pumps, and forgets the flow. It
// reports false if the flow was stopped already.
func (f *flow) stop(reset bool) bool {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		return false
	}
	f.stopped = true
	f.cond.Broadcast()
	server := f.server
	f.mu.Unlock()
	f.cancel()
	for _, c := range []*net.TCPConn{f.client, server} {
		if c == nil {
			continue
		}
		if reset {
			_ = c.SetLinger(0)
		}
		_ = c.Close()
	}
	f.p.forget(f)
	return true
}
