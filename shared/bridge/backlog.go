package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// backlogLoop polls nsqd's /stats for the channel depth (messages queued and not yet delivered),
// the signal that the bridge is falling behind. Addresses come from lookupd, or from
// NSQDHTTPAddresses when connecting to nsqd directly; without either there is no backlog gauge.
func (b *Bridge) backlogLoop(ctx context.Context) {
	if len(b.o.LookupdHTTPAddresses) == 0 && len(b.o.NSQDHTTPAddresses) == 0 {
		return
	}
	client := &http.Client{Timeout: 5 * time.Second}
	t := time.NewTicker(b.o.BacklogInterval)
	defer t.Stop()
	for {
		if depth, cc, others, err := b.backlog(ctx, client); err != nil {
			// The gauges keep their last value: the failure counter and this line say it is stale.
			b.m.backlogPollFailed()
			b.log.Warn("nsq backlog poll failed: the backlog, RDY and channel client gauges are stale", "err", err)
		} else {
			b.m.nsqBacklog(depth)
			b.reportChannel(cc, others)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// backlog returns the channel's depth and its clients, summed over the nsqd instances.
func (b *Bridge) backlog(ctx context.Context, client *http.Client) (int64, channelClients, []clientStats, error) {
	var cc channelClients
	var others []clientStats
	addrs := b.o.NSQDHTTPAddresses
	if len(b.o.LookupdHTTPAddresses) > 0 {
		var err error
		if addrs, err = b.lookup(ctx, client); err != nil {
			return 0, cc, nil, err
		}
		b.topicNowhere.Store(len(addrs) == 0)
	}
	b.m.owned(len(addrs))
	var total int64
	for _, a := range addrs {
		var stats struct {
			Topics []struct {
				TopicName string `json:"topic_name"`
				Channels  []struct {
					ChannelName string        `json:"channel_name"`
					Depth       int64         `json:"depth"`
					Clients     []clientStats `json:"clients"`
				} `json:"channels"`
			} `json:"topics"`
		}
		q := url.Values{"format": {"json"}, "topic": {b.o.Topic}, "channel": {b.o.Channel}}
		if err := getJSON(ctx, client, httpURL(a, "/stats", q), &stats); err != nil {
			return 0, cc, nil, err
		}
		for _, t := range stats.Topics {
			for _, c := range t.Channels {
				if t.TopicName == b.o.Topic && c.ChannelName == b.o.Channel {
					total += c.Depth
					others = append(others, cc.count(b.clientID, c.Clients)...)
				}
			}
		}
	}
	return total, cc, others, nil
}

// lookup returns the HTTP addresses of the topic's nodes this bridge reads.
func (b *Bridge) lookup(ctx context.Context, client *http.Client) ([]string, error) {
	ps, err := b.producers(ctx, client)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range ps {
		if b.o.NSQDPartition.Owns(p.tcpAddr()) { // else another bridge's node
			out = append(out, net.JoinHostPort(p.BroadcastAddress, strconv.Itoa(p.HTTPPort)))
		}
	}
	return out, nil
}

var errNotFound = errors.New("404 Not Found")

func httpURL(addr, path string, q url.Values) string {
	u, err := url.Parse(addr)
	if err != nil || u.Scheme == "" || u.Host == "" {
		u = &url.URL{Scheme: "http", Host: addr}
	}
	u.Path, u.RawQuery = path, q.Encode()
	return u.String()
}

func getJSON(ctx context.Context, client *http.Client, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return fmt.Errorf("GET %s: %w", u, errNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
