package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/nsqk/nsqk/shared/kpl"
	"github.com/peterbourgon/ff/v3/ffcli"
)

const decodeHelp = `Reads Kinesis record data, one base64 value per line (standard alphabet, padded or
not, surrounding whitespace ignored), and prints one JSON object per input line, in order:

  {"aggregated":bool,
   "records":[{"partition_key":string|null,"explicit_hash_key":string|null,"data_base64":string}],
   "error":string|null}

A KPL aggregate expands to its user records. Anything else is one pass-through record with
"partition_key":null (the Kinesis record's own key applies; it is not part of the data). An
aggregate that cannot be fully expanded (key index out of range) gives the records before the
fault and "error". A line that is not base64, or longer than 16 MiB, gives "aggregated":false,
"records":[] and "error"; decoding goes on with the next line.
Keys are printed as JSON strings (bytes that are not UTF-8 become U+FFFD).

Every line gets an output line, so output line N is about input line N: an empty (or blank)
line is the base64 of zero bytes, i.e. one empty pass-through record.

Exits 0 unless reading stdin (or writing stdout) fails.`

func decodeCommand() *ffcli.Command {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	return &ffcli.Command{
		Name:       "decode",
		ShortUsage: "nsqk decode < records.b64",
		ShortHelp:  "decode base64 Kinesis record data (one per line) into JSON",
		LongHelp:   decodeHelp,
		FlagSet:    fs,
		Exec: func(ctx context.Context, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("decode: unexpected arguments %q (input is read from stdin)", args)
			}
			// main's context ends on SIGINT/SIGTERM, but a read from a terminal or pipe cannot be
			// interrupted; everything decoded so far has been flushed (see runDecode), so leave.
			done := make(chan struct{})
			defer close(done)
			go func() {
				select {
				case <-ctx.Done():
					os.Exit(130)
				case <-done:
				}
			}()
			return runDecode(os.Stdin, os.Stdout)
		},
	}
}

// maxLine bounds the memory one input line may take: 16 MiB of base64 is a 12 MiB record, above
// any Kinesis record size. A longer line is reported as an error and skipped.
const maxLine = 16 << 20

type decodedRecord struct {
	PartitionKey    *string `json:"partition_key"`
	ExplicitHashKey *string `json:"explicit_hash_key"`
	DataBase64      string  `json:"data_base64"`
}

type decodedLine struct {
	Aggregated bool            `json:"aggregated"`
	Records    []decodedRecord `json:"records"`
	Error      *string         `json:"error"`
}

// runDecode streams r to w line by line. Output is flushed whenever no more input is buffered, so
// an interactive or piped user sees each result before the next line arrives.
func runDecode(r io.Reader, w io.Writer) error {
	br := bufio.NewReaderSize(r, 1<<20)
	bw := bufio.NewWriterSize(w, 1<<16)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)

	var (
		ld      lineDecoder
		line    []byte
		tooLong bool
	)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > maxLine {
			tooLong, line = true, line[:0]
		} else if !tooLong {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("decode: reading stdin: %w", err)
		}
		atEOF := err != nil
		// A final line without '\n' counts; the empty "line" after a final '\n' does not.
		if len(chunk) > 0 || len(line) > 0 || tooLong {
			var out *decodedLine
			if tooLong {
				out = ld.fail(fmt.Sprintf("line longer than %d bytes", maxLine))
			} else {
				out = ld.decode(line)
			}
			if err := enc.Encode(out); err != nil {
				return fmt.Errorf("decode: writing stdout: %w", err)
			}
		}
		line, tooLong = line[:0], false
		if atEOF || br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return fmt.Errorf("decode: writing stdout: %w", err)
			}
		}
		if atEOF {
			return nil
		}
	}
}

// lineDecoder decodes lines, reusing its buffers from one line to the next.
type lineDecoder struct {
	d    kpl.Deaggregator
	recs []kpl.UserRecord
	raw  []byte
	out  decodedLine
}

func (ld *lineDecoder) reset() *decodedLine {
	if ld.out.Records == nil {
		ld.out.Records = make([]decodedRecord, 0, 1) // "records":[] rather than null
	}
	ld.out = decodedLine{Records: ld.out.Records[:0]}
	return &ld.out
}

func (ld *lineDecoder) fail(msg string) *decodedLine {
	out := ld.reset()
	out.Error = &msg
	return out
}

func (ld *lineDecoder) decode(line []byte) *decodedLine {
	text := bytes.TrimSpace(line)
	enc := base64.StdEncoding
	if len(text)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	if n := enc.DecodedLen(len(text)); cap(ld.raw) < n {
		ld.raw = make([]byte, n)
	}
	n, err := enc.Decode(ld.raw[:cap(ld.raw)], text)
	if err != nil {
		return ld.fail("invalid base64: " + err.Error())
	}
	out := ld.reset()
	var recs []kpl.UserRecord
	recs, out.Aggregated, err = ld.d.Deaggregate(ld.recs[:0], ld.raw[:n])
	ld.recs = recs
	for _, r := range recs {
		out.Records = append(out.Records, decodedRecord{
			PartitionKey:    strOrNil(r.PartitionKey),
			ExplicitHashKey: strOrNil(r.ExplicitHashKey),
			DataBase64:      base64.StdEncoding.EncodeToString(r.Data),
		})
	}
	if err != nil {
		msg := err.Error()
		out.Error = &msg
	}
	return out
}

func strOrNil(b []byte) *string {
	if b == nil {
		return nil
	}
	s := string(b)
	return &s
}
