// Package location defines the device location message that `make dev`, the benchmarks and the
// fault suite publish to NSQ, and a deterministic generator for it: ~250-byte JSON objects,
// 10-character user ids, and a per-user `seq` counter that consumers use to check per-key order.
package location

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Message is one location update from a device.
type Message struct {
	UserID   string  `json:"user_id"`
	Seq      uint64  `json:"seq"`   // per-user counter, starts at 1, +1 per message
	TS       int64   `json:"ts"`    // publish time, Unix milliseconds
	Lat      float64 `json:"lat"`   // degrees
	Lon      float64 `json:"lon"`   // degrees
	Accuracy float64 `json:"acc"`   // metres
	Speed    float64 `json:"speed"` // m/s
	Heading  int     `json:"heading"`
	Altitude float64 `json:"alt"`
	Battery  int     `json:"battery"`
	Source   string  `json:"source"`
	Device   string  `json:"device"`
	App      string  `json:"app"`
	Network  string  `json:"net"`
}

// Parse decodes a message body.
func Parse(body []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(body, &m); err != nil {
		return m, err
	}
	if m.UserID == "" {
		return m, fmt.Errorf("location: no user_id")
	}
	return m, nil
}

// UserID returns the 10-character id of user i: "u" + 9 digits.
func UserID(i int) string { return fmt.Sprintf("u%09d", i) }

// Generator produces messages for a fixed population of users, cycling through them in a
// pseudo-random but reproducible order, each user's seq increasing by one per message.
type Generator struct {
	users []userState
	rng   *rand.Rand
	buf   []byte
	// Now returns the timestamp written into ts; default time.Now.
	Now func() time.Time
}

type userState struct {
	id       string
	device   string
	seq      uint64
	lat, lon float64
}

// NewGenerator returns a generator over `users` users (at least 1), reproducible for a seed.
func NewGenerator(users int, seed uint64) *Generator {
	if users < 1 {
		users = 1
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &Generator{users: make([]userState, users), rng: rng, Now: time.Now}
	for i := range g.users {
		g.users[i] = userState{
			id:     UserID(i),
			device: fmt.Sprintf("%08x-%04x-4%03x-a%03x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xfff, rng.Uint64()&0xffffffffffff),
			lat:    -60 + rng.Float64()*130,
			lon:    -180 + rng.Float64()*360,
		}
	}
	return g
}

// Next appends the next message's JSON to dst and returns it with the user id and seq used.
// The returned slice aliases dst's backing array when it had room.
func (g *Generator) Next(dst []byte) (body []byte, user string, seq uint64) {
	u := &g.users[g.rng.IntN(len(g.users))]
	u.seq++
	u.lat += (g.rng.Float64() - 0.5) * 0.001
	u.lon += (g.rng.Float64() - 0.5) * 0.001
	b := dst
	b = append(b, `{"user_id":"`...)
	b = append(b, u.id...)
	b = append(b, `","seq":`...)
	b = strconv.AppendUint(b, u.seq, 10)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, g.Now().UnixMilli(), 10)
	b = append(b, `,"lat":`...)
	b = strconv.AppendFloat(b, u.lat, 'f', 6, 64)
	b = append(b, `,"lon":`...)
	b = strconv.AppendFloat(b, u.lon, 'f', 6, 64)
	b = append(b, `,"acc":`...)
	b = strconv.AppendFloat(b, 3+g.rng.Float64()*30, 'f', 1, 64)
	b = append(b, `,"speed":`...)
	b = strconv.AppendFloat(b, g.rng.Float64()*35, 'f', 2, 64)
	b = append(b, `,"heading":`...)
	b = strconv.AppendInt(b, int64(g.rng.IntN(360)), 10)
	b = append(b, `,"alt":`...)
	b = strconv.AppendFloat(b, g.rng.Float64()*400, 'f', 1, 64)
	b = append(b, `,"battery":`...)
	b = strconv.AppendInt(b, int64(5+g.rng.IntN(95)), 10)
	b = append(b, `,"source":"gps","device":"`...)
	b = append(b, u.device...)
	b = append(b, `","app":"tracker-ios/7.4.2","net":"lte"}`...)
	return b, u.id, u.seq
}
