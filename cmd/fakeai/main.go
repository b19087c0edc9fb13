// Command fakeai serves the fake OpenAI API of package sluice/fakeai, for
// demos, manual tests and load benchmarks.
//
//	fakeai -addr 127.0.0.1:8081 -latency 50ms -chunks 10 -chunk-interval 20ms -rpm 600 -tpm 100000 -api-key sk-test
//
// It prints "listening on ADDR" once it accepts connections and exits cleanly
// on SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"sluice/fakeai"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fakeai:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("fakeai", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8081", "listen address (host:port; port 0 picks a free one)")
	var cfg fakeai.Config
	fs.DurationVar(&cfg.Latency, "latency", 0, "delay before response headers (non-stream) or the first event (stream)")
	fs.IntVar(&cfg.Chunks, "chunks", fakeai.DefaultChunks, "content chunks per stream")
	fs.DurationVar(&cfg.ChunkInterval, "chunk-interval", 0, "pause between stream events")
	fs.IntVar(&cfg.RPM, "rpm", 0, "requests per minute before 429 (0 = unlimited)")
	fs.IntVar(&cfg.TPM, "tpm", 0, "tokens per minute before 429 (0 = unlimited)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "required bearer key (empty accepts any)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", fs.Args())
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: fakeai.New(cfg), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("listening on %s\n", ln.Addr())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	// Let finished requests drain briefly; hanging ones are cut by Close.
	shutCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
