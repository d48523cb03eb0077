package sfnlocal

import "testing"

func TestTaskError(t *testing.T) {
	r := &Result{Events: []Event{
		{Type: "TaskStarted", State: "Finish", Call: 1},
		{Type: "TaskFailed", State: "Finish", Call: 1, Error: "RolloutProblems", Cause: `{"errorType":"RolloutProblems","errorMessage":"first"}`},
		{Type: "TaskStarted", State: "Step", Call: 2},
		{Type: "TaskSucceeded", State: "Step", Call: 2, Output: []byte(`{}`)},
		{Type: "TaskStarted", State: "Finish", Call: 3},
		{Type: "TaskFailed", State: "Finish", Call: 3, Error: "RolloutProblems", Cause: `{"errorType":"RolloutProblems","errorMessage":"group halted"}`},
		{Type: "TaskStarted", State: "Start", Call: 4},
		{Type: "TaskFailed", State: "Start", Call: 4, Error: "States.Timeout", Cause: "not JSON"},
	}}
	tests := []struct{ state, want string }{
		{"Finish", "group halted"}, // the last failure
		{"Step", ""},               // succeeded
		{"Start", "not JSON"},      // a cause without errorMessage as it is
		{"Restore", ""},            // never ran
	}
	for _, tt := range tests {
		if got := r.TaskError(tt.state); got != tt.want {
			t.Errorf("TaskError(%q) = %q, want %q", tt.state, got, tt.want)
		}
	}
}
