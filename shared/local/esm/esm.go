// Package esm emulates a Lambda event source mapping (ESM) for a Kinesis stream, locally,
// against kinesalite or kinesis-mock: it polls every shard (parents before children after a
// reshard), builds batches, invokes a function through aws-lambda-go's own JSON handler path
// (lambda.Handler.Invoke, e.g. lambda.NewHandler(fn)) and applies the ESM's error handling.
//
// Semantics implemented, with their sources (Lambda developer guide unless noted):
//
//   - Batching ("Lambda event source mappings", "Using AWS Lambda with Amazon Kinesis"): a batch
//     holds records of one shard, in order, at most BatchSize (default 100, max 10,000) and at
//     most 6 MiB of event payload (the synchronous invocation payload limit). With
//     MaximumBatchingWindow 0 the function is invoked with what is available; otherwise records
//     are gathered until the batch is full or the window (which begins when the previous
//     invocation completes) has passed.
//   - Shards: each shard is read in order; a child shard is read only after all its parents were
//     read to their end (GetRecords returned no NextShardIterator) and their records handled.
//     Shards present when the mapping starts use StartingPosition (TRIM_HORIZON, LATEST or
//     AT_TIMESTAMP); shards that appear later (children) are read from TRIM_HORIZON.
//   - ParallelizationFactor (1–10): concurrent batches per shard, records assigned to lanes by a
//     hash of their partition key, so that order is kept per partition key ("New AWS Lambda
//     scaling controls for Kinesis and DynamoDB event sources", AWS Compute Blog). The outer
//     (Kinesis) partition key is what counts: KPL aggregates carry one for all their records.
//   - ReportBatchItemFailures ("Configuring partial batch response with Kinesis Data Streams and
//     Lambda"): the checkpoint is the reported item with the lowest sequence number and Lambda
//     retries the records from it; an empty/null list or response is a complete success; an
//     empty/null itemIdentifier or a wrong key name is a complete failure (an identifier not in
//     the batch too, as in LocalStack's poller). Without ReportBatchItemFailures the response is
//     ignored: a returned failure list counts as success (logged as a warning here).
//   - BisectBatchOnFunctionError (same page and "Retain discarded batch records for a Kinesis
//     Data Streams event source"): on a function error the batch is split in two and the halves
//     retried, first half first; splitting does not count towards the retry quota. With a
//     partial response the batch is split at the returned sequence number and only the rest is
//     retried. When that rest fails again at its first record (no progress) this emulator treats
//     it as a function error and bisects, so that a poison record ends alone — the docs do not
//     say what Lambda does there.
//   - MaximumRetryAttempts (-1 = infinite, the default; 0–10,000): retries after the first
//     attempt, so a batch is invoked at most MaximumRetryAttempts+1 times before it is discarded.
//     A partial response that made progress counts as a failed attempt for the rest.
//   - MaximumRecordAge (-1/0 = infinite; 60 s–7 days in AWS): records older than this when a
//     batch is about to be invoked (ApproximateArrivalTimestamp) are discarded without invocation.
//   - On-failure destination: each discarded (sub-)batch is one JSON line in the OnFailure file,
//     the invocation record Lambda sends to SQS/SNS (example in "Using AWS Lambda with Amazon
//     Kinesis"): requestContext {requestId, functionArn, condition, approximateInvokeCount},
//     responseContext {statusCode, executedVersion, functionError}, version "1.0", timestamp,
//     KinesisBatchInfo {shardId, startSequenceNumber, endSequenceNumber,
//     approximateArrivalOfFirstRecord, approximateArrivalOfLastRecord, batchSize, streamArn}.
//     condition is "RetryAttemptsExhausted", or "RecordAgeExceeded" for expired records (the
//     value other emulators use; the AWS docs show only the first).
//   - Function timeout: the invocation context carries FunctionTimeout as its deadline; an
//     invocation still running then is a function error ("TimedOut"). Nothing can kill a
//     goroutine, so the emulator waits for it to return before retrying (real Lambda kills the
//     sandbox).
//
// Not emulated: enhanced fan-out, filtering, tumbling windows, throttling, the 5-minute iterator
// expiry beyond re-acquiring an iterator, checkpoints that survive a restart (a Mapping starts
// from StartingPosition every time).
package esm
