package proxy

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestRelayLineOfBufferSize: a line exactly as long as the read buffer ends
// with a read of "\n" alone, which once passed for a blank line and cut the
// event in two (found by FuzzRelayEvents).
func TestRelayLineOfBufferSize(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n"} {
		line := "data: " + strings.Repeat("x", relayBufSize-6)
		if eol == "\r\n" {
			line = line[:len(line)-1] // the "\r" fills the buffer
		}
		body := line + eol + "data: y" + eol + eol + "data: [DONE]" + eol + eol
		r := &relay{sse: true, br: bufio.NewReaderSize(strings.NewReader(body), relayBufSize)}
		var events []string
		for {
			ev, err := r.next()
			if len(ev) > 0 {
				events = append(events, string(bytes.Clone(ev)))
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if len(events) != 2 || events[0] != line+eol+"data: y"+eol+eol {
			t.Fatalf("eol %q: %d events, want 2 (the first %d bytes)", eol, len(events), len(line)+len(eol)*2+7)
		}
	}
}
