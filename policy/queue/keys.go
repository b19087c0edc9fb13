package queue

import "time"

// KeyState is one key of an upstream's pool as the scheduler sees it.
type KeyState struct {
	// ID and Weight are the key's (Options.Keys).
	ID     string
	Weight int64
	// Resting is how long the key still rests after a 429 or 503 (0: it
	// takes calls).
	Resting time.Duration
}

// KeyStates returns the pool's keys in Options.Keys order.
func (s *Scheduler) KeyStates() []KeyState {
	now := time.Now().UnixMicro()
	out := make([]KeyState, len(s.o.Keys))
	for i, k := range s.o.Keys {
		out[i] = KeyState{ID: k.ID, Weight: k.Weight}
		if r := s.rest[i].Load(); r > now {
			out[i].Resting = time.Duration(r-now) * time.Microsecond
		}
	}
	return out
}

// KeyReady reports a pool of several keys in which some key is not
// resting: a call refused with one key can go out with another at once.
func (s *Scheduler) KeyReady() bool {
	if len(s.rest) < 2 {
		return false
	}
	now := time.Now().UnixMicro()
	for i := range s.rest {
		if s.rest[i].Load() <= now {
			return true
		}
	}
	return false
}
