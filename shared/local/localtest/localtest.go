// Package localtest starts the local stand-ins (embedded nsqd and nsqlookupd, the Kinesis
// emulators, dynalite, a local SQS) for tests: each start helper skips the test under -short,
// fails it when the stand-in cannot start, and stops the stand-in in t.Cleanup. A Kinesis emulator
// takes seconds to start, so a package whose tests each use a stream of their own may share one
// (SharedKinesis, with Main in its TestMain).
//
// Local environment: tests and `nsqk dev` use this; product code never does.
package localtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/nsqk/nsqk/shared/local/dynalocal"
	"github.com/nsqk/nsqk/shared/local/kinesislocal"
	"github.com/nsqk/nsqk/shared/local/nsqlocal"
	"github.com/nsqk/nsqk/shared/local/sqslocal"
)

// Kinesis starts a Kinesis emulator (kinesalite unless o.Kind says otherwise) for one test.
func Kinesis(t testing.TB, o kinesislocal.Options) *kinesislocal.Emulator {
	t.Helper()
	SkipShort(t, string(kindOr(o.Kind)))
	e, err := kinesislocal.Start(context.Background(), o)
	if err != nil {
		t.Fatalf("start %s: %v", kindOr(o.Kind), err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

// shared holds the emulators SharedKinesis started, one per kind, until Main stops them.
var shared struct {
	mu     sync.Mutex
	inMain bool
	emus   map[kinesislocal.Kind]*kinesislocal.Emulator
	errs   map[kinesislocal.Kind]error
}

// SharedKinesis returns the emulator of o.Kind shared by the tests of this package, starting it
// with o on first use; Main stops it after the last test. Each test uses a stream of its own
// (Stream). A failed start fails every test that asks for it.
func SharedKinesis(t testing.TB, o kinesislocal.Options) *kinesislocal.Emulator {
	t.Helper()
	kind := kindOr(o.Kind)
	SkipShort(t, string(kind))
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if !shared.inMain {
		t.Fatal("localtest.SharedKinesis: call localtest.Main from the package's TestMain (it stops the emulator)")
	}
	e, err := shared.emus[kind], shared.errs[kind]
	if e == nil && err == nil {
		e, err = kinesislocal.Start(context.Background(), o)
		shared.emus[kind], shared.errs[kind] = e, err
	}
	if err != nil {
		t.Fatalf("start %s: %v", kind, err)
	}
	return e
}

// Main runs the package's tests, stops the emulators SharedKinesis started and exits:
//
//	func TestMain(m *testing.M) { localtest.Main(m) }
func Main(m *testing.M) {
	shared.mu.Lock()
	shared.inMain = true
	shared.emus = map[kinesislocal.Kind]*kinesislocal.Emulator{}
	shared.errs = map[kinesislocal.Kind]error{}
	shared.mu.Unlock()
	code := m.Run()
	shared.mu.Lock()
	for _, e := range shared.emus {
		e.Close()
	}
	shared.mu.Unlock()
	os.Exit(code)
}

// NSQD starts an embedded nsqd for one test.
func NSQD(t testing.TB, o nsqlocal.Options) *nsqlocal.NSQD {
	t.Helper()
	SkipShort(t, "nsqd")
	n, err := nsqlocal.Start(o)
	if err != nil {
		t.Fatalf("start nsqd: %v", err)
	}
	t.Cleanup(n.Stop)
	return n
}

// Lookupd starts an embedded nsqlookupd for one test.
func Lookupd(t testing.TB) *nsqlocal.Lookupd {
	t.Helper()
	SkipShort(t, "nsqlookupd")
	l, err := nsqlocal.StartLookupd(nil)
	if err != nil {
		t.Fatalf("start nsqlookupd: %v", err)
	}
	t.Cleanup(l.Stop)
	return l
}

// Dynamo starts dynalite for one test.
func Dynamo(t testing.TB) *dynalocal.Dynalite {
	t.Helper()
	SkipShort(t, "dynalite")
	d, err := dynalocal.Start(context.Background(), dynalocal.Options{})
	if err != nil {
		t.Fatalf("start dynalite: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// Table creates an on-demand table with string partition key hashKey, named uniquely in this
// process, and returns the name.
func Table(t testing.TB, c *dynamodb.Client, hashKey string) string {
	t.Helper()
	name := uniqueName(t)
	if err := dynalocal.CreateTable(context.Background(), c, name, hashKey); err != nil {
		t.Fatal(err)
	}
	return name
}

// SQS starts a local SQS endpoint (fauxqs) for one test.
func SQS(t testing.TB) *sqslocal.Server {
	t.Helper()
	SkipShort(t, "a local SQS (fauxqs)")
	s, err := sqslocal.Start(context.Background(), sqslocal.Options{})
	if err != nil {
		t.Fatalf("start local SQS: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Queue creates a standard queue named uniquely in this process and returns its URL.
func Queue(t testing.TB, c *sqs.Client) string {
	t.Helper()
	// SQS queue names: [a-zA-Z0-9_-]{1,80}.
	name := strings.ReplaceAll(uniqueName(t), ".", "-")
	if len(name) > 80 {
		name = name[len(name)-80:]
	}
	url, err := sqslocal.CreateQueue(context.Background(), c, name)
	if err != nil {
		t.Fatal(err)
	}
	return url
}

// SkipShort skips the test under -short: it needs a local stand-in.
func SkipShort(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: needs %s", what)
	}
}

var nameSeq atomic.Int64

// uniqueName is a stream, table or queue name unique in this process, derived from the test's.
func uniqueName(t testing.TB) string {
	return fmt.Sprintf("%s-%d", sanitize(t.Name()), nameSeq.Add(1))
}

// Stream creates an ACTIVE stream with a name unique in this process and returns the name.
func Stream(t testing.TB, kc *kinesis.Client, shards int32) string {
	t.Helper()
	name := uniqueName(t)
	ctx := context.Background()
	if err := kinesislocal.CreateStream(ctx, kc, name, shards); err != nil {
		t.Fatalf("create stream %s: %v", name, err)
	}
	if err := kinesislocal.WaitActive(ctx, kc, name); err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	return name
}

// sanitize keeps a name within Kinesis's [a-zA-Z0-9_.-]{1,128} (DynamoDB's table names allow
// the same).
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 100 {
		b = b[len(b)-100:]
	}
	return string(b)
}

func kindOr(k kinesislocal.Kind) kinesislocal.Kind {
	if k == "" {
		return kinesislocal.Kinesalite
	}
	return k
}
