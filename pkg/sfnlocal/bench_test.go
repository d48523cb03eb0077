package sfnlocal

import (
	"context"
	"fmt"
	"os/exec"
	"testing"
)

// BenchmarkNodeStartup is the floor of every Run and Check: starting Node
// with an empty script.
func BenchmarkNodeStartup(b *testing.B) {
	eng := engine(b)
	for b.Loop() {
		if err := exec.Command(eng.Node, "--input-type=module", "--eval", "").Run(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRunPass is one execution of a one-state machine: Node, the
// engine's import (it loads the AWS SDK's Lambda client) and the run.
func BenchmarkRunPass(b *testing.B) {
	eng := engine(b)
	def := []byte(`{"StartAt":"P","States":{"P":{"Type":"Pass","End":true}}}`)
	for b.Loop() {
		if res, err := eng.Run(context.Background(), def, nil, Options{}); err != nil || res.Status != Succeeded {
			b.Fatal(err, res)
		}
	}
}

// BenchmarkCheck is Unsupported plus asl-validator in Node.
func BenchmarkCheck(b *testing.B) {
	eng := engine(b)
	for b.Loop() {
		if err := eng.Check(context.Background(), []byte(base)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSynthesizedMachine is one execution of the test machine: three
// Prepare invocations (two retried failures), the Wait overridden, and a
// Map of five squares (up to 300 ms each, two at a time) under the RIE.
func BenchmarkSynthesizedMachine(b *testing.B) {
	m := startMachine(b)
	i := 0
	for b.Loop() {
		i++
		res := m.run(b, fmt.Sprintf(`{"value":5,"failTimes":2,"key":"bench-%d","items":%s}`, i, items(300, 200, 100, 0, 50)))
		if res.Status != Succeeded {
			b.Fatal(res.Status, res.Error)
		}
	}
}
