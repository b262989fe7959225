package stack

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nsqk/nsqk/infra/config"
)

// TestDocsDescribeEverything keeps the deployment and operations documentation (README.md and the
// pages under docs/) in step with the code: every context key, consumer field, alarm threshold and
// alarm name is documented.
func TestDocsDescribeEverything(t *testing.T) {
	root := repoRoot(t)
	files, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	files = append(files, filepath.Join(root, "README.md"))
	var doc strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc.Write(b)
	}
	var want []string
	for _, k := range config.KnownKeys {
		want = append(want, "`"+k+"`")
	}
	for _, k := range config.AlarmKeys() {
		want = append(want, "`"+k+"`")
	}
	for _, k := range config.ConsumerFields() {
		want = append(want, "`"+k+"`")
	}
	for _, a := range []string{AlarmStreamWriteThrottled, AlarmStreamIteratorAge, AlarmPutRecordsFailed, AlarmBridgeTasksBelow,
		AlarmBridgeDeadLettered, AlarmBridgeAckLatency, AlarmBridgeNSQBacklog, AlarmLambdaErrors + "-<consumer>",
		AlarmLambdaThrottles + "-<consumer>", AlarmLambdaIteratorAge + "-<consumer>", AlarmDLQVisible + "-<consumer>", AlarmOrderViolations,
		AlarmDLQExpiring + "-<consumer>", AlarmDeadLettersVisible + "-<consumer>", AlarmDeadLetteredRecords + "-<consumer>", AlarmFailedBatchesStored,
		AlarmBridgeStalled, AlarmBridgeStalled + "-<i>", AlarmBridgeChannelShared, AlarmBridgeLateWindowEvicted, AlarmBridgeWrittenEvicted} {
		want = append(want, "| `"+a+"` |")
	}
	for _, w := range want {
		if !strings.Contains(doc.String(), w) {
			t.Errorf("the documentation does not describe %s", w)
		}
	}
}
