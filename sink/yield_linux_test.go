package sink

import (
	"net"
	"runtime"
	"testing"
)

// TestYielderLetsTheNetworkIn: with one P, a goroutine waiting on a socket
// that became readable runs before yield returns. runtime.Gosched alone
// fails this: the scheduler polls the network only with nothing runnable.
func TestYielderLetsTheNetworkIn(t *testing.T) {
	y := newYielder()
	if y == nil {
		t.Fatal("no timer fd: the sink would fall back to runtime.Gosched")
	}
	defer y.close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	w, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := make(chan struct{}, 1)
	go func() {
		var b [1]byte
		for {
			if _, err := r.Read(b[:]); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	late := 0
	for range 50 {
		runtime.Gosched() // the reader is parked on its socket
		if _, err := w.Write([]byte{1}); err != nil {
			t.Fatal(err)
		}
		y.yield()
		select {
		case <-got:
		default:
			late++
			<-got
		}
	}
	if late > 5 {
		t.Errorf("the reader ran after yield returned %d times in 50", late)
	}
}
