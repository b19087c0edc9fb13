package sink

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// A yielder lets a busy sink goroutine give way to requests. Go's scheduler
// polls the network only when no goroutine is runnable (or every 10 ms), so
// runtime.Gosched, which leaves the caller runnable, lets a request whose
// socket became readable wait until the whole batch is done. yield instead
// parks the caller on a timer fd armed for 1 µs, through the netpoller: it
// runs again at the scheduler's next network poll, together with any
// request that became ready meanwhile, and after what was already runnable.
// Each goroutine needs its own yielder; nil falls back to runtime.Gosched.
type yielder struct {
	fd int
	f  *os.File
}

func newYielder() *yielder {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil
	}
	return &yielder{fd: fd, f: os.NewFile(uintptr(fd), "sink-yield")} // non-blocking: pollable
}

// yield gives way as described above.
func (y *yielder) yield() {
	if y == nil {
		runtime.Gosched()
		return
	}
	runtime.Gosched() // what is runnable already goes first in any case
	in := unix.ItimerSpec{Value: unix.Timespec{Nsec: 50_000}}
	if unix.TimerfdSettime(y.fd, 0, &in, nil) != nil {
		runtime.Gosched()
		return
	}
	var b [8]byte
	if _, err := y.f.Read(b[:]); err != nil {
		runtime.Gosched()
	}
}

// close releases the timer fd.
func (y *yielder) close() {
	if y != nil {
		_ = y.f.Close()
	}
}
