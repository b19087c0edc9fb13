//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"runtime"
	"time"
)

func setChildAttrs(*exec.Cmd) {}

func preciseSleep(d time.Duration) { time.Sleep(d) }

func selfCPU() time.Duration { return 0 }

func numCPU() int { return runtime.NumCPU() }

func reniceSelf(int) error { return errors.New("only supported on Linux") }

func pinSelf(bool) func() { return func() {} }
