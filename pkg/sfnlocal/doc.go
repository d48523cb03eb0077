// Package sfnlocal executes a synthesized AWS Step Functions state machine
// offline: the real definition from the CDK template, run by the npm
// package aws-local-stepfunctions (3.0.0, Node 22, both pinned in .tools by
// `make node`) with every Lambda task invoking the real bootstrap under the
// Lambda Runtime Interface Emulator (pkg/localrun).
//
//	def, _ := sfnlocal.Resolve(template, "", nil)     // plain ASL; functions become LocalFunctionARN(logicalID)
//	ids, _ := sfnlocal.Functions(template, "")        // the functions to start under the RIE
//	eng, _ := sfnlocal.FindEngine(root)               // node and the packages in root/.tools
//	err := eng.Check(ctx, def)                        // Unsupported + asl-validator 4.0.0
//	res, err := eng.Run(ctx, def, input, sfnlocal.Options{
//		Functions:     map[string][]string{sfnlocal.LocalFunctionARN(ids[0]): {fn.URL}},
//		WaitOverrides: map[string]time.Duration{"Pause": 0},
//	})
//	// res.Status, res.Output, res.Error, res.Cause, res.Events, res.Invocations(), res.Entered()
//
// What matches AWS: a function error (the RIE answers HTTP 200, or 502 when
// the runtime exits, with {errorType, errorMessage} and no
// X-Amz-Function-Error header) becomes an error named by its errorType
// (aws-lambda-go: the Go type's name, or messages.InvokeResponse_Error.Type)
// with the error JSON as Cause, so Retry and Catch match as in AWS. Errors
// Lambda raises itself (a timeout, which the RIE answers in plain text;
// Runtime.* and Sandbox.* types) are named Lambda.Unknown, as the Step
// Functions developer guide documents ("Handle Lambda service exceptions");
// match States.TaskFailed to be safe either way. lambda:invoke tasks send
// Parameters.Payload and get {"Payload": ..., "StatusCode": 200, ...}; tasks
// with a function ARN as Resource get the response itself. Tasks without
// TimeoutSeconds have no timeout (the engine's default is 60 s). $$.Execution
// (Id, Name, Input, StartTime, RoleArn) and $$.StateMachine come from
// Options. A state input, output or task result over 256 KiB stops the run
// (AWS: States.DataLimitExceeded).
//
// Engine quirks handled here: the engine starts a Map's queued iterations
// even after one failed; for a Map at the top level of the definition their
// tasks are not invoked (TaskSuppressed events). Node's timers overflow
// above 24.8 days (a longer wait ends at once): such timeouts are capped
// and a longer Wait must be overridden.
//
// Limits: JSONPath only; Unsupported refuses what the engine would ignore or
// cannot run (JSONata, Assign, Arguments, Output, Distributed Map,
// ToleratedFailure*, heartbeats, .sync, .waitForTaskToken, Credentials,
// non-Lambda tasks, $$.State and $$.Task). One RIE serves one invocation at
// a time (a concurrent one crashes it): give a function as many RIEs as may
// run at once; extra invocations queue where AWS would scale out. A Map
// nested in a Map or Parallel may still start queued iterations after a
// failure, as may a Map retried after a failure. Cancelling the context
// kills the node process: the execution stops where it was (a crash), and
// invocations in flight finish in their RIE. There is no execution history
// (25,000 events) limit, no execution-name idempotency and no redrive; each
// Run is a fresh execution (about 1 s of Node start and engine load).
package sfnlocal
