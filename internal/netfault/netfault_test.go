package netfault

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	// silence is how long the tests watch a socket to see that nothing
	// arrives: a fault that did nothing would deliver within it.
	silence = 200 * time.Millisecond
	// patience is how long they wait for what must arrive.
	patience = 5 * time.Second
)

// backend is the tests' target: a TCP server on loopback that echoes what it
// reads, or hands its connections to the test.
type backend struct {
	ln       *net.TCPListener
	accepted atomic.Int64
	conns    chan *net.TCPConn // nil for an echo server
	done     chan struct{}
	wg       sync.WaitGroup

	closeOnce sync.Once

	mu   sync.Mutex
	open []*net.TCPConn
}

// startBackend starts an echo server, or with echo false a server whose
// connections the test takes with next. Cleanup stops it and joins its
// goroutines.
func startBackend(t *testing.T, echo bool) *backend {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	b := &backend{ln: ln, done: make(chan struct{})}
	if !echo {
		b.conns = make(chan *net.TCPConn, 64)
	}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.AcceptTCP()
		if err != nil {
			return
		}
		b.accepted.Add(1)
		b.mu.Lock()
		b.open = append(b.open, c)
		b.mu.Unlock()
		if b.conns == nil {
			b.wg.Add(1)
			go b.echo(c)
			continue
		}
		select {
		case b.conns <- c:
		case <-b.done:
			return
		}
	}
}

// echo writes back what it reads until EOF, then closes.
func (b *backend) echo(c *net.TCPConn) {
	defer b.wg.Done()
	_, _ = io.Copy(c, c)
	_ = c.Close()
}

// close stops the server, closes its connections and joins its goroutines;
// it is idempotent.
func (b *backend) close() {
	b.closeOnce.Do(func() {
		close(b.done)
		_ = b.ln.Close()
		b.mu.Lock()
		for _, c := range b.open {
			_ = c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
}

// next returns the server side of the next connection the backend accepts.
func (b *backend) next(t *testing.T) *net.TCPConn {
	t.Helper()
	select {
	case c := <-b.conns:
		return c
	case <-time.After(patience):
		require.FailNow(t, "the backend accepted no connection")
		return nil
	}
}

// newProxy starts a proxy to b, closed (and checked) by Cleanup.
func newProxy(t *testing.T, b *backend) *Proxy {
	t.Helper()
	p, err := Listen(b.addr())
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, p.Close()) })
	return p
}

// dial connects to addr, closed by Cleanup.
func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, patience)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c.(*net.TCPConn)
}

func write(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetWriteDeadline(time.Now().Add(patience)))
	_, err := io.WriteString(c, msg)
	require.NoError(t, err)
}

// expect requires msg to arrive on c within patience.
func expect(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	buf := make([]byte, len(msg))
	_, err := io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// echo requires msg to go through c and come back.
func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	write(t, c, msg)
	expect(t, c, msg)
}

// requireSilent requires that nothing arrives on c for silence: no byte, no
// EOF, no error; the read times out.
func requireSilent(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(silence)))
	n, err := c.Read(make([]byte, 64))
	require.Zero(t, n, "bytes arrived")
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
}

// requireReset requires c's next read to fail with ECONNRESET within
// patience.
func requireReset(t *testing.T, c net.Conn) {
	t.Helper()
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	_, err := io.Copy(io.Discard, c)
	require.ErrorIs(t, err, syscall.ECONNRESET)
}

func TestListenRejectsBadTargets(t *testing.T) {
	for _, target := range []string{"10.0.0.1:5432", "192.168.1.1:5432", "0.0.0.0:5432", "[::]:5432", "example.com:5432"} {
		p, err := Listen(target)
		require.ErrorIs(t, err, ErrNotLoopback, target)
		require.Nil(t, p)
	}
	for _, target := range []string{"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:0", "127.0.0.1:65536", ":5432"} {
		p, err := Listen(target)
		require.Error(t, err, target)
		require.Nil(t, p)
	}
	for target, want := range map[string]string{"localhost:5432": "127.0.0.1:5432", "127.1.2.3:1": "127.1.2.3:1", "[::1]:5432": "[::1]:5432"} {
		p, err := Listen(target)
		require.NoError(t, err, target)
		require.Equal(t, want, p.Target())
		require.NoError(t, p.Close())
	}
}

func TestForwardAndHalfClose(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	require.Equal(t, p.Addr(), net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port())))

	c := dial(t, p.Addr())
	echo(t, c, "hello")
	// The client's FIN reaches the echo server, which then closes: the
	// client reads what was still in flight, then EOF.
	write(t, c, "bye")
	require.NoError(t, c.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
	rest, err := io.ReadAll(c)
	require.NoError(t, err)
	require.Equal(t, "bye", string(rest))
	require.Eventually(t, func() bool { return p.Flows() == 0 }, patience, time.Millisecond)

	st := p.Stats()
	require.Equal(t, int64(1), st.Accepted)
	require.Equal(t, int64(1), st.Connected)
	for _, n := range []int64{st.FromClient, st.ToTarget, st.FromTarget, st.ToClient} {
		require.Equal(t, int64(len("hellobye")), n)
	}
	require.Zero(t, st.Aborted)
}

func TestBlackhole(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	old := dial(t, p.Addr())
	echo(t, old, "before")

	require.Equal(t, 1, p.Blackhole())
	write(t, old, "during")
	requireSilent(t, old)
	st := p.Stats()
	require.Equal(t, st.ToTarget, st.FromClient, "the proxy read the bytes sent during the blackhole: they must wait in the kernel")

	// New connections are not affected.
	fresh := dial(t, p.Addr())
	echo(t, fresh, "fresh")
	require.Equal(t, 2, p.Flows())

	// Heal resumes the same flow: what was sent during the blackhole
	// arrives.
	require.NoError(t, p.Heal())
	expect(t, old, "during")
	echo(t, old, "after")
	require.Equal(t, int64(1), p.Stats().Blackholed)
}

func TestBlackholeHoldsBothDirectionsAndFIN(t *testing.T) {
	b := startBackend(t, false)
	p := newProxy(t, b)
	c := dial(t, p.Addr())
	s := b.next(t)
	write(t, c, "up")
	expect(t, s, "up")
	write(t, s, "down")
	expect(t, c, "down")

	require.Equal(t, 1, p.Blackhole())
	require.Zero(t, p.Blackhole(), "a blackholed flow is counted once")
	write(t, s, "to-client")
	write(t, c, "to-server")
	require.NoError(t, c.CloseWrite())
	requireSilent(t, c)
	requireSilent(t, s) // neither the bytes nor the FIN

	require.NoError(t, p.Heal())
	expect(t, c, "to-client")
	require.NoError(t, s.SetReadDeadline(time.Now().Add(patience)))
	got, err := io.ReadAll(s)
	require.NoError(t, err)
	require.Equal(t, "to-server", string(got))
}

func TestRefuse(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	old := dial(t, p.Addr())
	echo(t, old, "x")

	require.NoError(t, p.SetNewConns(Refuse))
	_, err := net.DialTimeout("tcp", p.Addr(), patience)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
	echo(t, old, "open flows go on")

	require.NoError(t, p.SetNewConns(Forward))
	echo(t, dial(t, p.Addr()), "back on the same port")
}

func TestHang(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	require.NoError(t, p.SetNewConns(Hang))
	require.Equal(t, Hang, p.Mode())

	hung := dial(t, p.Addr())
	write(t, hung, "anyone?")
	requireSilent(t, hung)
	require.Zero(t, b.accepted.Load(), "a hung connection never reaches the target")

	// Heal does not revive a hung connection; new ones forward.
	require.NoError(t, p.Heal())
	echo(t, dial(t, p.Addr()), "new")
	requireSilent(t, hung)
	require.Equal(t, int64(1), p.Stats().Hung)
}

func TestBlackholedNewConnsResumeOnHeal(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	require.NoError(t, p.SetNewConns(Blackholed))

	c := dial(t, p.Addr())
	write(t, c, "early")
	requireSilent(t, c)
	require.Zero(t, b.accepted.Load())

	require.NoError(t, p.Heal())
	expect(t, c, "early")
	require.Equal(t, int64(1), b.accepted.Load())
}

func TestPartition(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	old := dial(t, p.Addr())
	echo(t, old, "x")

	n, err := p.Partition()
	require.NoError(t, err)
	require.Equal(t, 1, n)
	write(t, old, "old")
	fresh := dial(t, p.Addr())
	write(t, fresh, "fresh")
	requireSilent(t, old)
	requireSilent(t, fresh)

	require.NoError(t, p.Heal())
	expect(t, old, "old")
	expect(t, fresh, "fresh")
}

func TestResetAll(t *testing.T) {
	b := startBackend(t, false)
	p := newProxy(t, b)
	c := dial(t, p.Addr())
	s := b.next(t)
	echoVia(t, c, s)
	require.NoError(t, p.SetNewConns(Hang))
	hung := dial(t, p.Addr())
	require.Eventually(t, func() bool { return p.Flows() == 2 }, patience, time.Millisecond)

	start := time.Now()
	require.Equal(t, 2, p.ResetAll())
	require.Zero(t, p.Flows())
	requireReset(t, c)
	requireReset(t, s)
	requireReset(t, hung)
	require.Less(t, time.Since(start), time.Second, "the resets arrive at once")
	require.Equal(t, int64(2), p.Stats().Reset)
}

// echoVia sends a byte from c to s and back.
func echoVia(t *testing.T, c, s net.Conn) {
	t.Helper()
	write(t, c, "1")
	expect(t, s, "1")
	write(t, s, "2")
	expect(t, c, "2")
}

func TestPeerResetAndDialErrorPropagate(t *testing.T) {
	b := startBackend(t, false)
	p := newProxy(t, b)
	c := dial(t, p.Addr())
	s := b.next(t)
	echoVia(t, c, s)
	require.NoError(t, c.SetLinger(0))
	require.NoError(t, c.Close())
	requireReset(t, s)
	require.Eventually(t, func() bool { return p.Stats().Aborted == 1 }, patience, time.Millisecond)

	// A target that refuses: the client is reset.
	gone := startBackend(t, true)
	p2 := newProxy(t, gone)
	gone.close()
	// The reset can come so fast that it fails the client's connect.
	c2, err := net.DialTimeout("tcp", p2.Addr(), patience)
	if err == nil {
		defer c2.Close()
		requireReset(t, c2)
	} else {
		require.ErrorIs(t, err, syscall.ECONNRESET)
	}
	require.Equal(t, int64(1), p2.Stats().DialErrors)
}

func TestLatency(t *testing.T) {
	const d = 100 * time.Millisecond
	const margin = 150 * time.Millisecond
	b := startBackend(t, true)
	p := newProxy(t, b)
	c := dial(t, p.Addr())
	echo(t, c, "warm")

	// Latency applies to the open flow. A burst of small writes, each its
	// own chunk, comes back in order, each 2d after it was sent: the
	// delays overlap instead of adding up.
	p.SetLatency(d)
	require.Equal(t, d, p.Latency())
	sent, arrived := burst(t, c, 50)
	var worst time.Duration
	for i := range sent {
		worst = max(worst, arrived[i].Sub(sent[i]))
	}
	t.Logf("worst round trip %v", worst)
	for i := range sent {
		rtt := arrived[i].Sub(sent[i])
		require.GreaterOrEqual(t, rtt, 2*d, "message %d", i)
		require.Less(t, rtt, 2*d+margin, "message %d", i)
	}

	p.SetLatency(0)
	start := time.Now()
	echo(t, c, "off")
	require.Less(t, time.Since(start), 2*d)
}

// burst writes n numbered messages on c, a millisecond apart, while it reads
// them back; it requires them in order and returns when each was sent and
// when it came back.
func burst(t *testing.T, c net.Conn, n int) (sent, arrived []time.Time) {
	t.Helper()
	sent = make([]time.Time, n)
	arrived = make([]time.Time, n)
	require.NoError(t, c.SetDeadline(time.Now().Add(patience)))
	werr := make(chan error, 1)
	go func() {
		msg := make([]byte, 8)
		for i := range n {
			binary.BigEndian.PutUint64(msg, uint64(i))
			sent[i] = time.Now()
			if _, err := c.Write(msg); err != nil {
				werr <- err
				return
			}
			// Pacing, not waiting for a condition: separate writes
			// make separate chunks.
			time.Sleep(time.Millisecond)
		}
		werr <- nil
	}()
	msg := make([]byte, 8)
	for i := range n {
		_, err := io.ReadFull(c, msg)
		arrived[i] = time.Now()
		require.NoError(t, err)
		require.Equal(t, uint64(i), binary.BigEndian.Uint64(msg), "out of order")
	}
	require.NoError(t, <-werr)
	require.NoError(t, c.SetDeadline(time.Time{}))
	return sent, arrived
}

func TestLoweringLatencyReleasesWaitingBytes(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	c := dial(t, p.Addr())
	p.SetLatency(time.Hour)
	write(t, c, "x")
	requireSilent(t, c)
	p.SetLatency(-time.Second) // off, like 0
	require.Zero(t, p.Latency())
	expect(t, c, "x")
}

func TestCloseJoinsEverything(t *testing.T) {
	b := startBackend(t, true)
	p, err := Listen(b.addr())
	require.NoError(t, err)

	// Flows in every state: blackholed, forwarding with bytes held by
	// latency (many, so that goroutines Close did not wait for would
	// still be exiting when it returns), hung, and blackholed at birth.
	held := dial(t, p.Addr())
	echo(t, held, "x")
	require.Equal(t, 1, p.Blackhole())
	write(t, held, "held")
	p.SetLatency(time.Hour)
	conns := []net.Conn{held}
	for range 40 {
		delayed := dial(t, p.Addr())
		write(t, delayed, "in flight")
		conns = append(conns, delayed)
	}
	require.NoError(t, p.SetNewConns(Hang))
	conns = append(conns, dial(t, p.Addr()))
	require.NoError(t, p.SetNewConns(Blackholed))
	conns = append(conns, dial(t, p.Addr()))
	require.Eventually(t, func() bool { return p.Flows() == len(conns) }, patience, time.Millisecond)
	require.NotEmpty(t, proxyGoroutines(), "the check below must see the proxy's goroutines")

	// On one P, the goroutines Close wakes run only when the test's
	// goroutine blocks: a Close that did not wait for them would return
	// before they could exit.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	require.NoError(t, p.Close())
	require.Empty(t, proxyGoroutines(), "goroutines outlived Close")
	require.Zero(t, p.Flows())
	for _, c := range conns {
		require.NoError(t, c.SetReadDeadline(time.Now().Add(patience)))
		_, err := io.Copy(io.Discard, c)
		require.NotErrorIs(t, err, os.ErrDeadlineExceeded, "the flow is still open")
	}

	require.NoError(t, p.Close(), "Close is idempotent")
	require.ErrorIs(t, p.SetNewConns(Forward), ErrClosed)
	require.Zero(t, p.Blackhole())
	_, err = net.DialTimeout("tcp", p.Addr(), patience)
	require.ErrorIs(t, err, syscall.ECONNREFUSED)
}

// proxyGoroutines returns the stacks of the goroutines running the proxy's
// code.
func proxyGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, fn := range []string{"netfault.(*Proxy)", "netfault.(*flow)", "netfault.(*latency)"} {
			if strings.Contains(g, fn) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

func TestFaultsWhileTrafficFlows(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				roundTripIgnoringErrors(p.Addr())
			}
		}()
	}
	faults := []func() error{
		func() error { p.Blackhole(); return nil },
		func() error { p.SetLatency(3 * time.Millisecond); return nil },
		p.Heal,
		func() error { p.ResetAll(); return nil },
		func() error { return p.SetNewConns(Refuse) },
		func() error { _, err := p.Partition(); return err },
		func() error { return p.SetNewConns(Hang) },
		func() error { p.SetLatency(0); return p.Heal() },
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		require.NoError(t, faults[i%len(faults)]())
		_ = p.Flows()
		_ = p.Stats()
	}
	close(stop)
	wg.Wait()
	require.NoError(t, p.Heal())
	echo(t, dial(t, p.Addr()), "still works")
}

// roundTripIgnoringErrors dials addr, sends a message and reads it back, with
// short deadlines; the faults make most of them fail.
func roundTripIgnoringErrors(addr string) {
	c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := io.WriteString(c, "ping"); err != nil {
		return
	}
	_, _ = io.ReadFull(c, make([]byte, 4))
}

func TestBadInput(t *testing.T) {
	b := startBackend(t, true)
	p := newProxy(t, b)
	for _, m := range []Mode{-1, Blackholed + 1} {
		require.Error(t, p.SetNewConns(m))
	}
	require.Equal(t, "Mode(42)", Mode(42).String())
	require.Equal(t, "Blackholed", Blackholed.String())
	require.Equal(t, Forward, p.Mode())
	echo(t, dial(t, p.Addr()), "unchanged")
}
