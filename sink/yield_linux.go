package sink

import (
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// A yielder lets a busy sink goroutine give way to requests. Go's scheduler
// polls the network only when no goroutine is runnable (or every 10 ms), so
// runtime.Gosched alone, which leaves the caller runnable, lets a request
// whose socket became readable wait until the whole batch is done. yield
// also parks the caller on a timer fd armed for 50 µs, read through the
// netpoller: the caller runs again at the scheduler's next network poll,
// after what was runnable and the requests that became ready meanwhile.
// With nothing else to run, the P idles those 50 µs. Each goroutine needs
// its own yielder; a nil one only calls runtime.Gosched.
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
	runtime.Gosched() // what is runnable already goes first in any case
	if y == nil {
		return
	}
	in := unix.ItimerSpec{Value: unix.Timespec{Nsec: 50_000}}
	if unix.TimerfdSettime(y.fd, 0, &in, nil) != nil {
		return
	}
	var b [8]byte
	_, _ = y.f.Read(b[:]) // parks until the timer fired and the network was polled
}

// close releases the timer fd.
func (y *yielder) close() {
	if y != nil {
		_ = y.f.Close()
	}
}
