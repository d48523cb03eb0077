package verify

// State travels between the actions in the execution. It is bounded: the
// images of the run are encoded once at start (Plan: gzip-compressed JSON,
// base64), their progress is one byte each, and what is in flight is at
// most maxConcurrent entries (BenchmarkState: 2,000 images stay far below
// Step Functions' 256 KB).
type State struct {
	V       int    `json:"v"`
	Policy  string `json:"policy"`
	Slot    string `json:"slot"`
	Trigger string `json:"trigger"`
	DryRun  bool   `json:"dryRun,omitempty"`
	// Run names the run: "<deployment>/<policy>/<slot>", the same for every
	// execution of the slot; the launches' client tokens derive from it.
	Run string `json:"run"`
	// Nonce: random, drawn at start; with Run it makes the launches'
	// client tokens (tokenPrefix).
	Nonce string `json:"nonce"`
	// Plan: the images to verify (encodePlan), base64 of gzip.
	Plan string `json:"plan"`
	// PlanText describes the plan (the dry run's answer).
	PlanText string `json:"planText,omitempty"`
	// Progress: one status byte per plan image (status* constants).
	Progress string `json:"progress"`
	// InFlight: launched (or being launched) verifications.
	InFlight []Flight `json:"inFlight,omitempty"`
	// Outcomes decided but not yet written to the image's tags.
	Tagging []Outcome `json:"tagging,omitempty"`
	// Terminate: instances of finished verifications whose termination is
	// not confirmed yet.
	Terminate []string `json:"terminate,omitempty"`
	// Failures: the first maxNotes failures with their reason (counts are
	// in Progress, exact).
	Failures []Outcome `json:"failures,omitempty"`
	// Notes: problems outside the plan (first maxNotes).
	Notes []string `json:"notes,omitempty"`
	// Candidates: the policy's instances with an available image; Skipped:
	// of those, left out because their newest image is verified already
	// (see Start); NotSampled: left out by the sample or MaxImages.
	Candidates int `json:"candidates"`
	Verified   int `json:"alreadyVerified,omitempty"`
	NotSampled int `json:"notSampled,omitempty"`
	// Swept: leftover verification instances of earlier runs terminated.
	Swept int `json:"swept,omitempty"`
	// AgeBase: the oldest "newest verified image" creation time (Unix
	// seconds) over the policy's instances outside the plan; 0: none.
	AgeBase int64 `json:"ageBase,omitempty"`
	// Cleanups counts cleanup rounds; Left is what cleanup could not
	// terminate when it gave up.
	Cleanups int      `json:"cleanups,omitempty"`
	Left     []string `json:"left,omitempty"`
	// Steps: step rounds taken (the history budget: MaxSteps).
	Steps int `json:"steps,omitempty"`
	// Began: start of the run, Unix seconds.
	Began int64 `json:"began"`
}

// Flight is one verification in flight.
type Flight struct {
	// Image: index in the plan.
	Image int `json:"i"`
	// Instance launched; empty while the launch is to be (re)tried.
	Instance string `json:"id,omitempty"`
	// Subnet: index of the subnet tried (the policy's own is index 0).
	Subnet int `json:"n,omitempty"`
	// Launched: Unix seconds of the RunInstances call that launched it.
	Launched int64 `json:"t,omitempty"`
	// Tries: launch attempts that failed retryably (5xx, throttled).
	Tries int `json:"r,omitempty"`
	// Last: the last observed state/status, for the timeout's reason.
	Last string `json:"l,omitempty"`
}

// Outcome of one image: verified (Reason empty) or failed.
type Outcome struct {
	Image  int    `json:"i"`
	Reason string `json:"reason,omitempty"`
	// At: Unix seconds when the outcome was observed.
	At int64 `json:"t"`
	// Tag: the outcome is written to the image (false: not tested; the
	// run fails but the image is not marked).
	Tag bool `json:"tag,omitempty"`
	// Tries: failed CreateTags calls for it.
	Tries int `json:"r,omitempty"`
}

const stateVersion = 1
