// Package emf writes CloudWatch Embedded Metric Format records: JSON log
// lines that CloudWatch Logs turns into metrics without any API call, so
// the functions need no cloudwatch:PutMetricData permission.
package emf

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"
)

// Namespace of all amibackup metrics.
const Namespace = "amibackup"

// Units used by amibackup.
const (
	Count        = "Count"
	Milliseconds = "Milliseconds"
	Seconds      = "Seconds"
)

// Metric is one value.
type Metric struct {
	Name  string
	Unit  string
	Value float64
}

// CountOf is a Count metric of n.
func CountOf(name string, n int) Metric { return Metric{Name: name, Unit: Count, Value: float64(n)} }

// Writer serialises records to one io.Writer (stdout in Lambda).
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// New returns a Writer.
func New(w io.Writer) *Writer { return &Writer{w: w} }

type directive struct {
	Namespace  string       `json:"Namespace"`
	Dimensions [][]string   `json:"Dimensions"`
	Metrics    []metricDecl `json:"Metrics"`
}

type metricDecl struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

// Emit writes one record with the given dimensions (e.g. Policy, Function).
func (w *Writer) Emit(at time.Time, dims map[string]string, metrics ...Metric) error {
	rec := map[string]any{}
	keys := slices.Sorted(maps.Keys(dims))
	d := directive{Namespace: Namespace, Dimensions: [][]string{keys}}
	for _, m := range metrics {
		if _, clash := dims[m.Name]; clash || m.Name == "_aws" {
			return fmt.Errorf("emf: metric name %q collides with a dimension", m.Name)
		}
		d.Metrics = append(d.Metrics, metricDecl{Name: m.Name, Unit: m.Unit})
		rec[m.Name] = m.Value
	}
	for k, v := range dims {
		rec[k] = v
	}
	rec["_aws"] = map[string]any{"Timestamp": at.UnixMilli(), "CloudWatchMetrics": []directive{d}}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("emf: marshal: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err = w.w.Write(append(b, '\n'))
	return err
}
