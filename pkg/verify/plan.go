package verify

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
)

// planImage is one image of the run, fixed at start.
type planImage struct {
	ID       string `json:"i"`
	Instance string `json:"n,omitempty"` // the backed-up instance (amibackup:instance-id)
	Arch     string `json:"a,omitempty"` // the image's architecture
	Created  int64  `json:"c"`           // Unix seconds
	// Base: creation (Unix seconds) of the instance's newest verified
	// image before the run, or, Unverified, of its oldest image
	// (metrics.VerifiedAgeHours).
	Base       int64 `json:"b,omitempty"`
	Unverified bool  `json:"u,omitempty"`
	// Clear: the image carries amibackup:verify or amibackup:verify-error
	// (an earlier failure) to delete when it verifies now.
	Clear bool `json:"x,omitempty"`
	// Devices: the image's EBS device names, launched with
	// DeleteOnTermination=true whatever the image says.
	Devices []string `json:"d,omitempty"`
}

// Progress bytes, one per plan image.
const (
	statusQueued    = '.'
	statusInFlight  = 'f'
	statusVerified  = 'v'
	statusFailed    = 'x' // tagged amibackup:verify=failed
	statusNotTested = 'n' // not booted for a reason that is not the image's (capacity, permissions, the run ended): not tagged
	statusGone      = 'g' // deregistered since the listing: nothing to tag
)

// encodePlan: JSON, gzip, base64. Image and instance IDs are random hex,
// so this is mostly the IDs' entropy: ~25 bytes an image (BenchmarkState).
func encodePlan(p []planImage) (string, error) {
	raw, err := json.Marshal(p)
	if err != nil {
		return "", err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(raw); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(buf.Bytes()), nil
}

// maxPlanJSON bounds what a plan may decompress to (MaxImages images of a
// few hundred bytes at most): a state cannot be used to exhaust memory.
const maxPlanJSON = 8 << 20

func decodePlan(s string) ([]planImage, error) {
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	js, err := io.ReadAll(io.LimitReader(zr, maxPlanJSON+1))
	if err != nil {
		return nil, err
	}
	if len(js) > maxPlanJSON {
		return nil, fmt.Errorf("larger than %d bytes uncompressed", maxPlanJSON)
	}
	var p []planImage
	if err := json.Unmarshal(js, &p); err != nil {
		return nil, err
	}
	if len(p) > MaxImages {
		return nil, fmt.Errorf("%d images, at most %d", len(p), MaxImages)
	}
	return p, nil
}
