// Package sfnlocal executes a synthesized AWS Step Functions state machine
// offline: the real definition from the CDK template, run by the npm
// package aws-local-stepfunctions (3.0.0, Node 22) with every Lambda task
// invoking the real bootstrap under the Lambda Runtime Interface Emulator.
//
//	def, _ := sfnlocal.Resolve(template, "", nil)          // plain ASL JSON; functions get LocalFunctionARN(logicalID)
//	eng, _ := sfnlocal.FindEngine(root)                    // node and the pinned packages in .tools
//	err := eng.Check(ctx, def)                             // Unsupported + asl-validator 4.0.0
//	res, err := eng.Run(ctx, def, input, sfnlocal.Options{
//		Functions:     map[string][]string{sfnlocal.LocalFunctionARN("WorkFn1234"): {fn.URL}},
//		WaitOverrides: map[string]time.Duration{"Pause": 0},
//	})
//	res.Status, res.Output, res.Error, res.Cause, res.Invocations(), res.Entered()
//
// What matches AWS: a function error (the RIE answers HTTP 200, or 502 when
// the runtime exits, with {errorType, errorMessage} and no
// X-Amz-Function-Error header) becomes an error named by its errorType with
// the error JSON as Cause, so Retry and Catch match as in AWS; errors Lambda
// raises itself (timeouts, which the RIE answers in plain text, Runtime.*
// and Sandbox.* errors) are named Lambda.Unknown as the Step Functions
// developer guide documents ("Handle Lambda service exceptions"): match
// States.TaskFailed to be safe either way. arn:aws:states:::lambda:invoke
// tasks send Parameters.Payload and get {"Payload": ..., "StatusCode": 200,
// ...} back; plain function-ARN tasks get the response itself. Tasks without
// TimeoutSeconds have no timeout (the engine's default is 60 s); timeouts
// beyond Node's timer range (24.8 days) are capped, and a longer Wait must
// be overridden.
//
// Limits: JSONPath only; Unsupported refuses what the engine would ignore
// (JSONata, Assign, Arguments, Output, Distributed Map, ToleratedFailure*,
// heartbeats, .sync, .waitForTaskToken, non-Lambda tasks). One RIE serves
// one invocation at a time (a concurrent one crashes it): give a function as
// many RIEs as may run at once; extra invocations queue (AWS would scale
// out). After a Map iteration fails, queued iterations may still start and
// invoke functions. Cancelling the context kills the node process: the
// execution stops where it was, invocations in flight finish in their RIE.
// There is no execution history limit, no payload size limit and no
// execution name idempotency.
package sfnlocal
