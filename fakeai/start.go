package fakeai

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Start serves a new Server with cfg on 127.0.0.1 at a free port. It returns
// the server, the base URL ("http://127.0.0.1:PORT/v1", what an SDK takes as
// its base URL) and a stop function that closes the listener and every
// connection (hanging requests see their context cancelled) and waits for the
// accept loop to end. stop may be called more than once.
func Start(cfg Config) (*Server, string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, "", nil, err
	}
	s := New(cfg)
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic("fakeai: serve: " + err.Error())
		}
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			_ = hs.Close()
			<-served
		})
	}
	return s, "http://" + ln.Addr().String() + "/v1", stop, nil
}
