package waves

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// encoded is a plan on the wire: the groups only. Waves and slots are
// derived again by Decode (build is deterministic), so they cost nothing.
type encoded struct {
	V         int     `json:"v"`
	WaveCap   int     `json:"c"`
	AllAtOnce bool    `json:"a,omitempty"`
	Groups    []Group `json:"g"`
}

const encodingVersion = 1

// maxDecoded bounds what Decode inflates (a 10,000-instance plan is about
// 250 KB of JSON).
const maxDecoded = 16 << 20

// Encode renders the plan as gzip-compressed JSON for storage between the
// workflow's tasks (an S3 object or, base64, the execution state: see
// BenchmarkPlan10k for the sizes).
func (p *Plan) Encode() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(encoded{V: encodingVersion, WaveCap: p.waveCap, AllAtOnce: p.AllAtOnce, Groups: p.Groups}); err != nil {
		return nil, fmt.Errorf("waves: encode plan: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("waves: encode plan: %w", err)
	}
	return buf.Bytes(), nil
}

// Decode reads a plan written by Encode and derives the same waves and slots.
func Decode(b []byte) (*Plan, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("waves: decode plan: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, maxDecoded+1))
	if err != nil {
		return nil, fmt.Errorf("waves: decode plan: %w", err)
	}
	if len(raw) > maxDecoded {
		return nil, fmt.Errorf("waves: decode plan: more than %d bytes", maxDecoded)
	}
	var e encoded
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("waves: decode plan: %w", err)
	}
	if e.V != encodingVersion {
		return nil, fmt.Errorf("waves: decode plan: version %d, this code reads %d", e.V, encodingVersion)
	}
	if e.WaveCap < 1 {
		return nil, fmt.Errorf("waves: decode plan: wave cap %d", e.WaveCap)
	}
	seen := map[string]bool{}
	var errs []error
	for i, g := range e.Groups {
		switch {
		case len(g.Members) == 0:
			errs = append(errs, fmt.Errorf("group %d has no members", i))
		case g.Max < 1 || g.Max > len(g.Members):
			errs = append(errs, fmt.Errorf("group %d: max %d for %d members", i, g.Max, len(g.Members)))
		case g.Key == "" && len(g.Members) != 1:
			errs = append(errs, fmt.Errorf("group %d: an ungrouped entry has one member", i))
		case !slices.IsSorted(g.Members):
			errs = append(errs, fmt.Errorf("group %d: members not in order", i))
		case g.Key == "" && len(g.ASGs) > 0:
			errs = append(errs, fmt.Errorf("group %d: an ungrouped entry has no Auto Scaling groups to list", i))
		case !slices.IsSorted(g.ASGs) || len(slices.Compact(slices.Clone(g.ASGs))) != len(g.ASGs) || slices.Contains(g.ASGs, ""):
			errs = append(errs, fmt.Errorf("group %d: Auto Scaling groups %q not sorted, repeated or empty", i, g.ASGs))
		case strings.HasPrefix(g.Key, "asg:") && slices.Contains(g.ASGs, strings.TrimPrefix(g.Key, "asg:")):
			errs = append(errs, fmt.Errorf("group %d: Auto Scaling groups %q repeat the key's", i, g.ASGs))
		}
		for _, id := range g.Members {
			if id == "" || seen[id] {
				errs = append(errs, fmt.Errorf("group %d: instance %q empty or listed twice", i, id))
			}
			seen[id] = true
		}
	}
	if len(errs) == 0 && !slices.IsSortedFunc(e.Groups, compareGroups) { // members checked first: compareGroups reads Members[0]
		errs = append(errs, errors.New("groups not in plan order"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("waves: decode plan: %w", err)
	}
	p := build(e.Groups, e.WaveCap)
	p.AllAtOnce = e.AllAtOnce
	return p, nil
}

// Digest identifies the plan (its groups, members and wave cap): a
// Progress records it, so a progress is never applied to a plan that
// changed, e.g. one derived again after an Auto Scaling group replaced an
// instance, where the same slot would name another instance.
func (p *Plan) Digest() string {
	if p.digest == "" {
		b, err := json.Marshal(encoded{V: encodingVersion, WaveCap: p.waveCap, AllAtOnce: p.AllAtOnce, Groups: p.Groups})
		if err != nil {
			panic(fmt.Sprintf("waves: marshal plan: %v", err)) // strings and ints only
		}
		sum := sha256.Sum256(b)
		p.digest = hex.EncodeToString(sum[:8])
	}
	return p.digest
}
