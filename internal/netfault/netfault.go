// Package netfault is a fault-injecting TCP proxy for tests: it sits between
// a database client and a server, both on the loopback interface, and
// provokes network faults with real TCP sockets.
//
// Listen starts a proxy on 127.0.0.1 that forwards every connection it
// accepts to a target on loopback; the client dials Proxy.Addr instead of the
// target. The proxy only ever listens on and dials loopback addresses: a
// target elsewhere is refused with ErrNotLoopback. It uses only the standard
// library and does not import "testing".
//
// # Faults and what they emulate
//
//   - Blackhole: the flows open now stop forwarding in both directions
//     without being closed, like a NAT or firewall that dropped their state, a
//     cable cut or a peer host that lost power: no FIN, no RST, nothing. The
//     proxy stops reading from both sockets, so each peer's writes are
//     buffered by the kernels and its reads block. Connections made later are
//     not affected (a new NAT entry works).
//   - Heal: the partition ends. Blackholed flows forward again and the bytes
//     buffered meanwhile are delivered, as TCP retransmission would deliver
//     them; a FIN or RST a peer sent meanwhile follows its bytes.
//   - ResetAll: every open flow is reset on both sides (RST), like a
//     firewall or load balancer that kills connections, or a server host that
//     rebooted and answers the next segment with RST: each peer's next read
//     fails with ECONNRESET.
//   - SetNewConns(Refuse): a server that is down, or a firewall that rejects
//     with TCP reset: connect fails at once with ECONNREFUSED. Flows open
//     already go on, as when a server stops listening; add ResetAll for a
//     server that crashed.
//   - SetNewConns(Hang): a server whose kernel completes the handshake but
//     whose program never answers (a stopped or wedged postmaster): connect
//     succeeds, then nothing ever comes back, even after Heal.
//   - SetNewConns(Blackholed) and Partition: connections made during a
//     partition. Connect succeeds (see below), nothing is forwarded, and Heal
//     resumes them like the flows that were blackholed.
//   - SetLatency: a long path. Every chunk of bytes is delivered d after the
//     proxy read it, in each direction, in order, so a round trip takes 2d
//     more. There is no jitter, loss, reordering or bandwidth limit.
//
// # What it cannot emulate
//
// The proxy is a program between two loopback sockets, not a network: the
// kernel acknowledges every byte it accepts. While a flow is blackholed the
// client's bytes are acknowledged and wait in the proxy's socket buffer, so
// the client never sees unacknowledged data: TCP_USER_TIMEOUT, the
// retransmission timeout (tcp_retries2) and TCP keepalive never fire through
// this proxy (keepalive probes are answered by the proxy's kernel). Only
// timeouts kept by the programs (context deadlines, statement or lock
// timeouts, heartbeats) detect a blackhole here. A writer blocks only once
// both socket buffers on its path are full (megabytes on loopback), where a
// real blackhole stalls it once its own send buffer fills.
//
// A connect never times out: the kernel completes the handshake before the
// proxy accepts, so where a real partition drops the SYN and the client's
// dial times out, here the dial succeeds and the first read blocks. ICMP
// errors (host or network unreachable) cannot be produced either. Heal
// delivers at once what a real network would deliver at the next
// retransmission, possibly minutes later after exponential backoff.
//
// While a flow is blackholed or hung the proxy reads nothing from it, so it
// does not notice a peer closing it: a blackholed flow ends once it is
// healed (the close is then forwarded), a hung one only by ResetAll or
// Close.
//
// # Flows and goroutines
//
// A flow is one accepted connection and its connection to the target, made
// when the flow may first forward. A FIN is forwarded as a FIN (CloseWrite),
// so a half-closed connection goes on working the other way; the flow ends
// when both sides have closed, when either side resets it or an I/O error
// occurs (the other side is then reset, as the RST would reach it on a real
// path), or by ResetAll or Close. When the target refuses, the client is
// reset; that can come so fast that the client's connect itself fails with
// ECONNRESET.
//
// Every goroutine the proxy starts is owned by the proxy: one accepts
// connections, and each flow runs one supervisor and, once connected to the
// target, a reader and a writer per direction. A flow's goroutines end when
// the flow ends; Close stops everything and returns only after every
// goroutine has returned.
package netfault

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrNotLoopback is returned by Listen when the target is not a loopback
// address.
var ErrNotLoopback = errors.New("netfault: target is not a loopback address")

// ErrClosed is returned by the methods that cannot act on a closed proxy.
var ErrClosed = errors.New("netfault: proxy closed")

// Mode says what the proxy does with the connections it accepts from now on.
type Mode int

// The modes for new connections; Forward is the default.
const (
	// Forward connects each new connection to the target and forwards.
	Forward Mode = iota
	// Refuse makes new connections fail with ECONNREFUSED. The proxy closes
	// its listener and listens on the same port again when the mode
	// changes: a closed port is what a client meets when a server is down,
	// where accepting and resetting would let the client's connect succeed
	// and fail its first read instead. Connections waiting in the accept
	// queue when the listener closes are reset by the kernel. While refused,
	// the port is free and another program may take it; leaving Refuse then
	// fails with an error wrapping EADDRINUSE.
	Refuse
	// Hang accepts new connections and then neither connects to the target
	// nor forwards anything, ever: Heal does not revive them (ResetAll or
	// Close ends them).
	Hang
	// Blackholed accepts new connections and forwards nothing until Heal,
	// which connects them to the target and delivers what the client sent
	// meanwhile, like the flows blackholed by Blackhole.
	Blackholed
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case Forward:
		return "Forward"
	case Refuse:
		return "Refuse"
	case Hang:
		return "Hang"
	case Blackholed:
		return "Blackholed"
	default:
		return "Mode(" + strconv.Itoa(int(m)) + ")"
	}
}

// Stats counts what a proxy has done since Listen. Bytes read and not
// delivered are in flight (held by latency or a blackhole) or were lost when
// their flow was reset or closed.
type Stats struct {
	Accepted   int64 // connections accepted, in any mode
	Connected  int64 // connections made to the target
	DialErrors int64 // failed connections to the target (the client is then reset)
	Hung       int64 // connections accepted in Hang mode
	Blackholed int64 // flows blackholed, by Blackhole, Partition or the Blackholed mode
	Reset      int64 // flows reset by ResetAll
	Aborted    int64 // flows ended by an error or a reset from a peer
	FromClient int64 // bytes read from the clients
	ToTarget   int64 // bytes delivered to the target
	FromTarget int64 // bytes read from the target
	ToClient   int64 // bytes delivered to the clients
	Open       int64 // flows open now, as Flows returns
}

// stats holds the counters behind Stats.
type stats struct {
	accepted, connected, dialErrors, hung      atomic.Int64
	blackholed, reset, aborted                 atomic.Int64
	fromClient, toTarget, fromTarget, toClient atomic.Int64
}

// Proxy is a fault-injecting TCP proxy. Its methods may be called from any
// goroutine, while traffic flows.
type Proxy struct {
	target string // host:port of the target, a loopback IP literal
	addr   string // 127.0.0.1:port the proxy listens on
	port   int

	mu     sync.Mutex
	ln     *net.TCPListener // nil while refusing and after Close
	mode   Mode
	flows  map[*flow]struct{}
	closed bool
	done   chan struct{} // closed by Close

	lat latency
	st  stats
	wg  sync.WaitGroup // every goroutine the proxy started
}

// Listen starts a proxy on 127.0.0.1 on a free port that forwards every
// connection it accepts to target, a host:port whose host is a loopback IP
// address or "localhost" (taken as 127.0.0.1). A target elsewhere is refused
// with an error wrapping ErrNotLoopback. The caller must Close the proxy.
func Listen(target string) (*Proxy, error) {
	t, err := loopbackTarget(target)
	if err != nil {
		return nil, err
	}
	ln, err := listenNotOn(t)
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		target: t,
		addr:   ln.Addr().String(),
		port:   ln.Addr().(*net.TCPAddr).Port,
		ln:     ln,
		flows:  make(map[*flow]struct{}),
		done:   make(chan struct{}),
	}
	p.lat.changed = make(chan struct{})
	p.wg.Add(1)
	go p.accept(ln)
	return p, nil
}

// loopbackTarget checks that target is host:port with a loopback host and a
// valid port, and returns it with the host as an IP literal.
func loopbackTarget(target string) (string, error) {
	host, port, err := net.SplitHostPort(target)
	if err != nil {
		return "", fmt.Errorf("netfault: target %q: %w", target, err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("netfault: target %q: invalid port %q", target, port)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", fmt.Errorf("netfault: target %q: %w", target, ErrNotLoopback)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// listenNotOn listens on a free port of 127.0.0.1 other than target's: a
// target whose server is gone frees its port, which the kernel may hand to
// the proxy, which would then forward to itself.
func listenNotOn(target string) (*net.TCPListener, error) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("netfault: listen: %w", err)
	}
	if ln.Addr().String() != target {
		return ln, nil
	}
	// Ask for another port while holding this one.
	other, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	_ = ln.Close()
	if err != nil {
		return nil, fmt.Errorf("netfault: listen: %w", err)
	}
	return other, nil
}

// Addr returns the host:port clients dial instead of the target. It does not
// change, even across Refuse.
func (p *Proxy) Addr() string { return p.addr }

// Port returns the port of Addr.
func (p *Proxy) Port() int { return p.port }

// Target returns the host:port the proxy forwards to.
func (p *Proxy) Target() string { return p.target }

// Close stops accepting connections, closes every flow and returns after
// every goroutine the proxy started has returned. Closing a flow closes its
// sockets without SO_LINGER 0 (the kernel still resets a socket closed with
// bytes unread, such as a blackholed one). Close is idempotent: later calls wait the same
// way and return nil.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	close(p.done)
	var err error
	if p.ln != nil {
		err = p.ln.Close()
		p.ln = nil
	}
	flows := p.flowList()
	p.mu.Unlock()
	for _, f := range flows {
		f.stop(false)
	}
	p.wg.Wait()
	if err != nil {
		return fmt.Errorf("netfault: close listener: %w", err)
	}
	return nil
}

// flowList returns the open flows; p.mu must be held.
func (p *Proxy) flowList() []*flow {
	flows := make([]*flow, 0, len(p.flows))
	for f := range p.flows {
		flows = append(flows, f)
	}
	return flows
}

// accept admits the connections ln accepts until ln is closed.
func (p *Proxy) accept(ln *net.TCPListener) {
	defer p.wg.Done()
	for {
		c, err := ln.AcceptTCP()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Out of file descriptors or an aborted handshake: pause
			// so a persistent error does not spin.
			if !p.pause(10 * time.Millisecond) {
				return
			}
			continue
		}
		p.admit(c)
	}
}

// pause waits for d and reports false if the proxy was closed meanwhile.
func (p *Proxy) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

// admit starts a flow for the accepted connection c, in the current mode.
func (p *Proxy) admit(c *net.TCPConn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return
	}
	p.st.accepted.Add(1)
	f := newFlow(p, c, p.mode)
	switch p.mode {
	case Hang:
		p.st.hung.Add(1)
	case Blackholed:
		p.st.blackholed.Add(1)
	}
	p.flows[f] = struct{}{}
	p.wg.Add(1)
	go f.run()
}

// forget removes f from the open flows.
func (p *Proxy) forget(f *flow) {
	p.mu.Lock()
	delete(p.flows, f)
	p.mu.Unlock()
}

// Blackhole stops forwarding on every flow open now, in both directions,
// without closing anything: the proxy stops reading from both sockets and
// holds the bytes it had read but not delivered. It interrupts the reads
// and writes under way and waits for them to return, so once it returns no
// byte is read or written on these flows until Heal. Connections
// accepted later are not affected. It returns how many flows it blackholed
// (flows already blackholed or hung are not counted).
func (p *Proxy) Blackhole() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.blackholeLocked()
}

// blackholeLocked is Blackhole with p.mu held.
func (p *Proxy) blackholeLocked() int {
	var held []*flow
	for f := range p.flows {
		if f.hold() {
			held = append(held, f)
		}
	}
	// The holds interrupted the I/O under way; wait for it to return.
	for _, f := range held {
		f.quiesce()
	}
	p.st.blackholed.Add(int64(len(held)))
	return len(held)
}

// Heal makes every blackholed flow forward again, delivering what was
// buffered meanwhile, and sets the mode for new connections back to
// Forward. Latency is kept, and flows accepted in Hang mode stay hung. It
// fails with ErrClosed once the proxy is closed, or when listening again
// after Refuse fails (see Refuse); the flows are healed anyway.
func (p *Proxy) Heal() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	err := p.setModeLocked(Forward)
	for f := range p.flows {
		f.release()
	}
	return err
}

// Partition blackholes every open flow and sets the mode for new
// connections to Blackholed, so no path works, until Heal. It returns how
// many open flows it blackholed; it fails as Heal does (the flows are
// blackholed anyway).
func (p *Proxy) Partition() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.blackholeLocked()
	return n, p.setModeLocked(Blackholed)
}

// ResetAll resets every open flow on both sides: each socket is closed with
// SO_LINGER 0, so the kernel sends RST and the peers' next reads fail with
// ECONNRESET. Blackholed and hung flows are reset too. It returns how many
// flows it reset.
func (p *Proxy) ResetAll() int {
	p.mu.Lock()
	flows := p.flowList()
	p.mu.Unlock()
	n := 0
	for _, f := range flows {
		if f.stop(true) {
			n++
		}
	}
	p.st.reset.Add(int64(n))
	return n
}

// SetNewConns sets what the proxy does with the connections it accepts from
// now on; flows open already are not affected. It fails with ErrClosed once
// the proxy is closed, for an unknown mode, and when listening again after
// Refuse fails (the mode is then still Refuse).
func (p *Proxy) SetNewConns(mode Mode) error {
	if mode < Forward || mode > Blackholed {
		return fmt.Errorf("netfault: unknown mode %v", mode)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.setModeLocked(mode)
}

// setModeLocked sets the mode, closing or opening the listener as Refuse
// requires; p.mu must be held.
func (p *Proxy) setModeLocked(mode Mode) error {
	if p.closed {
		return ErrClosed
	}
	if mode == p.mode {
		return nil
	}
	if mode == Refuse {
		err := p.ln.Close()
		p.ln = nil
		p.mode = Refuse
		if err != nil {
			return fmt.Errorf("netfault: close listener: %w", err)
		}
		return nil
	}
	if p.ln == nil {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: p.port})
		if err != nil {
			return fmt.Errorf("netfault: listen again on %s: %w", p.addr, err)
		}
		p.ln = ln
		p.wg.Add(1)
		go p.accept(ln)
	}
	p.mode = mode
	return nil
}

// Mode returns the mode for new connections.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Flows returns how many flows are open now: accepted and neither ended nor
// reset, in any state.
func (p *Proxy) Flows() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.flows)
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Accepted:   p.st.accepted.Load(),
		Connected:  p.st.connected.Load(),
		DialErrors: p.st.dialErrors.Load(),
		Hung:       p.st.hung.Load(),
		Blackholed: p.st.blackholed.Load(),
		Reset:      p.st.reset.Load(),
		Aborted:    p.st.aborted.Load(),
		FromClient: p.st.fromClient.Load(),
		ToTarget:   p.st.toTarget.Load(),
		FromTarget: p.st.fromTarget.Load(),
		ToClient:   p.st.toClient.Load(),
		Open:       int64(p.Flows()),
	}
}
