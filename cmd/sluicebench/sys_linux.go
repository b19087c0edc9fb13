package main

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"time"
)

// setChildAttrs makes the kernel kill the child if this process dies
// without cleaning up (SIGKILL, crash).
func setChildAttrs(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// preciseSleep sleeps for d with nanosleep(2): the Go timer wakes up to a
// millisecond late, too coarse to pace 2,000 req/s.
func preciseSleep(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	for {
		var rem syscall.Timespec
		if err := syscall.Nanosleep(&ts, &rem); err != syscall.EINTR {
			return
		}
		ts = rem
	}
}

// selfCPU returns the user+system CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func numCPU() int { return runtime.NumCPU() }

// reniceSelf sets the nice value of every thread of this process; threads
// created later inherit it from the thread that creates them.
func reniceSelf(nice int) error {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := syscall.Setpriority(syscall.PRIO_PROCESS, tid, nice); err != nil {
			return err
		}
	}
	return nil
}

// pinSelf puts every thread of this process on otherCPU and the Go runtime
// on one P when pinned, else on every CPU; the returned func restores every
// CPU and the previous GOMAXPROCS. Threads created later inherit the
// affinity of the thread that creates them.
func pinSelf(pinned bool) func() {
	procs := runtime.GOMAXPROCS(0)
	all := fmt.Sprintf("0-%d", numCPU()-1)
	set := func(cpus string) {
		if err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(os.Getpid())).Run(); err != nil {
			logf("taskset -a -p -c %s (this process): %v", cpus, err)
		}
	}
	if !pinned {
		if _, err := exec.LookPath("taskset"); err == nil {
			set(all)
		}
		return func() {}
	}
	set(strconv.Itoa(otherCPU))
	runtime.GOMAXPROCS(1)
	return func() {
		set(all)
		runtime.GOMAXPROCS(procs)
	}
}
