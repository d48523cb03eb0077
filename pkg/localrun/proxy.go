package localrun

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
)

// Proxy is an HTTPS proxy (HTTP CONNECT) standing in for a corporate egress
// proxy: it tunnels connections to one host name, which the functions cannot
// resolve or reach otherwise, to the emulator, and refuses everything else.
// A function that reaches EC2 through it has honoured HTTPS_PROXY.
type Proxy struct {
	// URL is the proxy's address for HTTPS_PROXY.
	URL    string
	host   string // the tunnelled host name (any port)
	target string // the emulator's host:port
	ln     net.Listener
	srv    *http.Server

	mu      sync.Mutex
	tunnels int
	conns   map[net.Conn]bool
}

// StartProxy serves a CONNECT proxy on a local port that tunnels host to
// target.
func StartProxy(host, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), host: host, target: target, ln: ln, conns: map[net.Conn]bool{}}
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve)}
	go p.srv.Serve(ln)
	return p, nil
}

// Tunnels is how many connections the proxy has tunnelled.
func (p *Proxy) Tunnels() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tunnels
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || err != nil || host != p.host {
		http.Error(w, "this proxy only tunnels CONNECT to "+p.host, http.StatusForbidden)
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	down, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(up, down) {
		return
	}
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		p.untrack(up, down)
		return
	}
	go func() { io.Copy(up, down); up.(*net.TCPConn).CloseWrite() }()
	io.Copy(down, up)
	p.untrack(up, down)
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil { // closed
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	p.tunnels++
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// Close stops the proxy and its tunnels.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.mu.Unlock()
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}
