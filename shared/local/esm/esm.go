// Package esm emulates a Lambda event source mapping (ESM) for a Kinesis stream, locally,
// against kinesalite or kinesis-mock: it polls every shard (parents before children after a
// reshard), builds batches, invokes function instances through aws-lambda-go's own JSON handler
// path (lambda.Handler.Invoke, e.g. lambda.NewHandler(fn)) and applies the ESM's error handling.
// It is a local stand-in for tests and `make dev`, never part of the product.
//
// It follows the AWS rules literally by default; where AWS documents nothing it takes the
// reading that retries or discards more. Each rule is implemented next to a comment quoting its
// source (Lambda developer guide unless noted):
//
//   - Batching ("How Lambda processes records from stream and queue-based event sources",
//     "Using Lambda to process records from Amazon Kinesis Data Streams"): a batch holds records
//     of one shard, in order, at most BatchSize (default 100, max 10,000) and at most 6 MiB of
//     event payload. With MaxBatchingWindow 0 the function is invoked with what is available;
//     otherwise records are gathered until the batch is full or the window (whole seconds,
//     beginning when the previous invocation completes) has passed. A shard with nothing new is
//     polled once per second. (config.go, mapping.go)
//   - Shards: each shard is read in order; a child shard is read only after all its parents were
//     read to their end and their records handled. Shards present when the mapping starts use
//     StartingPosition; shards that appear later (children) are read from TRIM_HORIZON.
//   - ParallelizationFactor (1–10): concurrent batches per shard, records assigned to lanes by a
//     hash of their partition key, so that order is kept per partition key ("New AWS Lambda
//     scaling controls for Kinesis and DynamoDB event sources", AWS Compute Blog). The outer
//     (Kinesis) partition key is what counts: KPL aggregates carry one for all their records.
//   - Execution environments: each lane has its own function instance, replaced after a timeout
//     or crash; Config.InstancePerInvocation gives every invocation a new one. (invoke.go)
//   - ReportBatchItemFailures ("Configuring partial batch response with Kinesis Data Streams and
//     Lambda"): the checkpoint is the reported item with the lowest sequence number and Lambda
//     retries the records from it; an empty/null list or response is a complete success; an
//     empty/null itemIdentifier or a wrong key name is a complete failure (an identifier not in
//     the batch too, as in LocalStack's poller). Without ReportBatchItemFailures the response is
//     ignored. A failure reported at index 0 splits nothing: the same records are retried until
//     MaximumRetryAttempts, then all of them are discarded. (event.go, invoke.go)
//   - BisectBatchOnFunctionError (same page and "Retain discarded batch records for a Kinesis
//     Data Streams event source in Lambda"): a function error (returned error, crash, timeout)
//     splits the batch in two, first half first, at no retry cost.
//   - MaximumRetryAttempts (-1 = until the records expire, the default; 0–10,000): a batch is
//     invoked at most MaximumRetryAttempts+1 counted times before it is discarded. A partial
//     success counts, and bisected halves keep the count (both undocumented: pessimistic).
//   - MaximumRecordAge (infinite, or 60 s–7 days): older records are discarded without being
//     sent. Throttled invocations (Faults.Throttle) are retried at no cost until then.
//   - At least once: Faults.Duplicate delivers a successfully handled batch a second time.
//   - On-failure destination (onfailure.go): one JSON line per discarded piece (or per batch with
//     ConsolidateDiscards) in the OnFailure file, the invocation record Lambda sends to SQS/SNS.
//   - Function timeout: the invocation context carries FunctionTimeout as its deadline; an
//     invocation still running then is a function error ("TimedOut"). Nothing can kill a
//     goroutine, so the emulator waits for it to return before retrying; its instance is
//     discarded.
//
// Not emulated: enhanced fan-out, filtering, tumbling windows, the 5-minute iterator expiry
// beyond re-acquiring an iterator, checkpoints that survive a restart (a Mapping starts from
// StartingPosition every time).
package esm
