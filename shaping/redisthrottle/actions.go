package redisthrottle

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mtakit/mtakit/shaping"
)

// ActionBus shares traffic shaping automation actions across a fleet
// through Redis, as KumoMTA's tsa-daemon shares them with its
// subscribers: every node publishes the actions its Observe triggers
// (Publish, for shaping.Options.OnAction) and applies those of the other
// nodes (Subscribe). Actions in force are also kept in a sorted set, so a
// node that starts or reconnects applies them at once.
//
// Publishing never blocks delivery: actions are queued and sent by a
// background goroutine; when Redis is unreachable they are dropped with a
// logged warning (each node still enforces its own).
type ActionBus struct {
	client redis.UniversalClient
	prefix string
	node   string
	log    *slog.Logger
	queue  chan shaping.Action
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// wireAction is an Action on the bus.
type wireAction struct {
	Node   string         `json:"node"`
	Action shaping.Action `json:"action"`
}

// NewActionBus returns an ActionBus on client; prefix starts its Redis
// keys (DefaultPrefix when ""); logger nil uses slog.Default(). Close it
// when done.
func NewActionBus(client redis.UniversalClient, prefix string, logger *slog.Logger) *ActionBus {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if logger == nil {
		logger = slog.Default()
	}
	b := &ActionBus{
		client: client,
		prefix: prefix,
		node:   randomID(),
		log:    logger,
		queue:  make(chan shaping.Action, 1024),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go b.sender()
	return b
}

func (b *ActionBus) channel() string { return b.prefix + "actions" }
func (b *ActionBus) store() string   { return b.prefix + "actions:active" }

// Publish queues a locally triggered action for the other nodes. It never
// blocks; use it as shaping.Options.OnAction.
func (b *ActionBus) Publish(a shaping.Action) {
	select {
	case b.queue <- a:
	default:
		b.log.Warn("shaping: action bus queue full; action not shared", "kind", a.Kind, "site", a.Site)
	}
}

func (b *ActionBus) sender() {
	defer close(b.done)
	for {
		select {
		case <-b.stop:
			return
		case a := <-b.queue:
			data, err := json.Marshal(wireAction{Node: b.node, Action: a})
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = b.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZAdd(ctx, b.store(), redis.Z{Score: float64(a.Expires.UnixMilli()), Member: data})
				p.ZRemRangeByScore(ctx, b.store(), "-inf", strconv.FormatInt(time.Now().UnixMilli(), 10))
				p.Publish(ctx, b.channel(), data)
				return nil
			})
			cancel()
			if err != nil {
				b.log.Warn("shaping: could not share an automation action through Redis", "kind", a.Kind,
					"site", a.Site, "domain", a.Domain, "err", err)
			}
		}
	}
}

// Subscribe calls handle with every action published by another node,
// first with those in force when it (re)connects, until ctx ends. It
// reconnects after Redis failures, and returns ctx's error. handle
// typically calls Shaping.ImportAction and applies the tenant, campaign
// and bounce kinds to the queues.
func (b *ActionBus) Subscribe(ctx context.Context, handle func(shaping.Action)) error {
	for {
		err := b.subscribeOnce(ctx, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.log.Warn("shaping: action bus subscription lost; retrying", "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

func (b *ActionBus) subscribeOnce(ctx context.Context, handle func(shaping.Action)) error {
	sub := b.client.Subscribe(ctx, b.channel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		return err
	}
	// Subscribed first, then read the store, so nothing falls between.
	now := strconv.FormatInt(time.Now().UnixMilli(), 10)
	current, err := b.client.ZRangeByScore(ctx, b.store(), &redis.ZRangeBy{Min: "(" + now, Max: "+inf"}).Result()
	if err != nil {
		return err
	}
	for _, m := range current {
		b.deliver(m, handle)
	}
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m, ok := <-ch:
			if !ok {
				return redis.ErrClosed
			}
			b.deliver(m.Payload, handle)
		}
	}
}

func (b *ActionBus) deliver(payload string, handle func(shaping.Action)) {
	var w wireAction
	if err := json.Unmarshal([]byte(payload), &w); err != nil || w.Node == b.node {
		return
	}
	if time.Now().Before(w.Action.Expires) {
		handle(w.Action)
	}
}

// Close stops the sender; queued actions not yet sent are dropped.
func (b *ActionBus) Close() error {
	b.once.Do(func() {
		close(b.stop)
		<-b.done
	})
	return nil
}
