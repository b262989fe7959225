package bench

// Targets the figures are judged against (a missed one is a MISS, not a FAIL).
const (
	// targetCPUMicros is the goal for the bridge's CPU per message on the 2-vCPU bench machine
	// (Intel Xeon); the hashing and encoding the formats require cost about 1 us of it. Absolute
	// CPU figures move with the host, so the report also gives them as ratios to the baseline.
	targetCPUMicros    = 2.5
	targetRSSMB        = 200.0
	targetBytesRatio   = 1.05 // payload bytes out / bytes in
	targetLatencySlack = 25.0 // ms over max-buffered-time for p99 at the target rate
	targetLatencyRate  = 20000
	// Shard scaling: each step must multiply the rate by this much, unless the rate is already
	// this close to the unthrottled bridge rate (the NSQ-side limit of the bridge).
	targetShardGrowth  = 1.5
	targetShardCeiling = 0.85
	// Scaling: 4 routes in one process against 1 route for the same messages, and two partitioned
	// bridges on two nsqd nodes against one bridge on one node (on the 2-core bench machine).
	targetRoutesRatio = 0.9
	targetGroupsRatio = 1.6
)

// Verdicts.
const (
	verdictPass = "PASS"
	verdictMiss = "MISS" // a performance target missed
	verdictFail = "FAIL" // a correctness check failed
)

// passIf is PASS when ok, else the verdict otherwise (MISS for a target, FAIL for a check).
func passIf(ok bool, otherwise string) string {
	if ok {
		return verdictPass
	}
	return otherwise
}
