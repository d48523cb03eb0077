package verify

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
)

var (
	subnetRE = regexp.MustCompile(`^subnet-[0-9a-f]{8}([0-9a-f]{9})?$`)
	sgRE     = regexp.MustCompile(`^sg-[0-9a-f]{8}([0-9a-f]{9})?$`)
)

var errNotYet = errors.New("verify: not implemented yet")

// Start parses the execution input and plans the run.
func (v *Verifier) Start(ctx context.Context, input json.RawMessage) (*Result, error) {
	return nil, errNotYet
}

// Step advances the run by one round.
func (v *Verifier) Step(ctx context.Context, st *State) (*Result, error) { return nil, errNotYet }

// Cleanup terminates what the run launched.
func (v *Verifier) Cleanup(ctx context.Context, st *State) (*Result, error) { return nil, errNotYet }

// Summary is what finish reports (and logs).
type Summary struct {
	Function   string `json:"function"`
	Deployment string `json:"deployment"`
	Policy     string `json:"policy"`
}

// Finish reports the run.
func (v *Verifier) Finish(ctx context.Context, st *State) (*Summary, error) { return nil, errNotYet }
