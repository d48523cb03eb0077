package emf

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

func TestEmitIsValidEMF(t *testing.T) {
	var buf bytes.Buffer
	w := New(&buf)
	at := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	if err := w.Emit(at, map[string]string{"Policy": "nightly", "Function": "backup"},
		Metric{"ImagesCreated", Count, 3}, Metric{"Duration", Milliseconds, 1500}); err != nil {
		t.Fatal(err)
	}
	var rec struct {
		AWS struct {
			Timestamp         int64
			CloudWatchMetrics []struct {
				Namespace  string
				Dimensions [][]string
				Metrics    []struct{ Name, Unit string }
			}
		} `json:"_aws"`
		Policy        string
		ImagesCreated float64
		Duration      float64
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	d := rec.AWS.CloudWatchMetrics[0]
	if rec.AWS.Timestamp != at.UnixMilli() || d.Namespace != "amibackup" || rec.Policy != "nightly" ||
		rec.ImagesCreated != 3 || rec.Duration != 1500 || len(d.Metrics) != 2 || d.Metrics[1].Unit != "Milliseconds" {
		t.Fatalf("record %+v", rec)
	}
	if len(d.Dimensions) != 1 || d.Dimensions[0][0] != "Function" || d.Dimensions[0][1] != "Policy" {
		t.Fatalf("dimensions %v", d.Dimensions)
	}
	if err := w.Emit(at, map[string]string{"Policy": "x"}, Metric{"Policy", Count, 1}); err == nil {
		t.Fatal("metric colliding with a dimension accepted")
	}
}
