// Package spooltest is a conformance suite for [spool.Spool]
// implementations.
//
// Anyone writing a custom Spool (on a SQL database, object storage, a
// replicated log...) should run it from their tests:
//
//	func TestMySpool(t *testing.T) {
//		spooltest.Run(t, func(t *testing.T) spool.Spool {
//			return mySpool.New(...)
//		})
//	}
//
// A durable implementation should use [RunDurable] instead, which runs the
// same checks and also closes and reopens the spool on the same directory to
// check that stored values survive and removed ones stay removed.
//
// The suite checks behaviour, not durability against power loss, which a
// test cannot observe.
package spooltest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/mtakit/mtakit/spool"
)

// Run checks that the spools returned by open behave as the [spool.Spool]
// contract requires. open is called once per subtest and must return a new,
// empty spool; the suite closes it (a Cleanup that closes it again is fine).
func Run(t *testing.T, open func(t *testing.T) spool.Spool) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(*testing.T, spool.Spool)
	}{
		{"StoreLoad", testStoreLoad},
		{"Overwrite", testOverwrite},
		{"LoadMissing", testLoadMissing},
		{"RemoveIdempotent", testRemoveIdempotent},
		{"EnumerateOrder", testEnumerateOrder},
		{"EnumerateEmpty", testEnumerateEmpty},
		{"EnumerateStop", testEnumerateStop},
		{"EnumerateCallsBack", testEnumerateCallsBack},
		{"StoreAfterRemove", testStoreAfterRemove},
		{"EnumerateIDs", testEnumerateIDs},
		{"StoreAfterRemoveWhileEnumerating", testStoreAfterRemoveWhileEnumerating},
		{"ChangesDuringEnumerate", testChangesDuringEnumerate},
		{"EmptyValue", testEmptyValue},
		{"LargeValue", testLargeValue},
		{"BufferOwnership", testBufferOwnership},
		{"Concurrent", testConcurrent},
		{"CanceledContext", testCanceledContext},
		{"Closed", testClosed},
		{"CloseWhileBusy", testCloseWhileBusy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() { _ = s.Close() })
			tt.fn(t, s)
		})
	}
}

// RunDurable runs [Run] with a fresh directory per subtest, then checks
// persistence: open is called repeatedly with the same dir and must return a
// spool over the data previously stored there.
func RunDurable(t *testing.T, open func(t *testing.T, dir string) spool.Spool) {
	t.Helper()
	Run(t, func(t *testing.T) spool.Spool { return open(t, t.TempDir()) })
	t.Run("Reopen", func(t *testing.T) { testReopen(t, open) })
	t.Run("CloseKeepsAcknowledged", func(t *testing.T) { testCloseKeepsAcknowledged(t, open) })
}

// Large is the size of the large value the suite stores. Message bodies can
// be bigger; implementations with their own limits should test them too.
const Large = 5 << 20

var bg = context.Background()

// value returns a value that identifies id, padded to n bytes when n is
// larger than that.
func value(id spool.ID, n int) []byte {
	v := []byte("value of " + id.String())
	for len(v) < n {
		v = append(v, byte('a'+len(v)%26))
	}
	return v
}

func mustStore(t *testing.T, s spool.Spool, id spool.ID, v []byte) {
	t.Helper()
	if err := s.Store(bg, id, v); err != nil {
		t.Fatalf("Store(%s): %v", id, err)
	}
}

func mustLoad(t *testing.T, s spool.Spool, id spool.ID, want []byte) {
	t.Helper()
	got, err := s.Load(bg, id)
	if err != nil {
		t.Fatalf("Load(%s): %v", id, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Load(%s) = %s, want %s", id, summary(got), summary(want))
	}
}

func mustMiss(t *testing.T, s spool.Spool, id spool.ID) {
	t.Helper()
	got, err := s.Load(bg, id)
	if !errors.Is(err, spool.ErrNotFound) {
		t.Fatalf("Load(%s) = %s, %v; want error wrapping spool.ErrNotFound", id, summary(got), err)
	}
}

// summary describes a value briefly: failing on a 5 MB value should not
// print it.
func summary(v []byte) string {
	if len(v) <= 64 {
		return fmt.Sprintf("%q", v)
	}
	return fmt.Sprintf("%q... (%d bytes)", v[:64], len(v))
}

type entry struct {
	id   spool.ID
	data []byte
}

func enumerate(t *testing.T, s spool.Spool) []entry {
	t.Helper()
	var got []entry
	err := s.Enumerate(bg, func(id spool.ID, data []byte) error {
		got = append(got, entry{id, data})
		return nil
	})
	if err != nil {
		t.Fatalf("Enumerate: %v", err)
	}
	return got
}

// checkContents asserts that Enumerate yields exactly want, in ID order.
func checkContents(t *testing.T, s spool.Spool, want map[spool.ID][]byte) {
	t.Helper()
	got := enumerate(t, s)
	ids := make([]spool.ID, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	if len(got) != len(ids) {
		t.Fatalf("Enumerate visited %d values, want %d", len(got), len(ids))
	}
	for i, e := range got {
		if e.id != ids[i] {
			t.Fatalf("Enumerate visit %d: id %s, want %s (ascending ID order)", i, e.id, ids[i])
		}
		if !bytes.Equal(e.data, want[e.id]) {
			t.Fatalf("Enumerate visit %d (%s): data %s, want %s", i, e.id, summary(e.data), summary(want[e.id]))
		}
	}
}

func compareIDs(a, b spool.ID) int { return bytes.Compare(a[:], b[:]) }

func testStoreLoad(t *testing.T, s spool.Spool) {
	want := map[spool.ID][]byte{}
	for range 10 {
		id := spool.NewID()
		want[id] = value(id, 100)
		mustStore(t, s, id, want[id])
	}
	for id, v := range want {
		mustLoad(t, s, id, v)
	}
}

func testOverwrite(t *testing.T, s spool.Spool) {
	id := spool.NewID()
	mustStore(t, s, id, []byte("first, and longer than the second"))
	mustStore(t, s, id, []byte("second"))
	mustLoad(t, s, id, []byte("second"))
	checkContents(t, s, map[spool.ID][]byte{id: []byte("second")})
}

func testLoadMissing(t *testing.T, s spool.Spool) {
	mustMiss(t, s, spool.NewID())
	id := spool.NewID()
	mustStore(t, s, id, []byte("x"))
	if err := s.Remove(bg, id); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	mustMiss(t, s, id)
}

func testRemoveIdempotent(t *testing.T, s spool.Spool) {
	if err := s.Remove(bg, spool.NewID()); err != nil {
		t.Fatalf("Remove of an absent ID: %v", err)
	}
	id, other := spool.NewID(), spool.NewID()
	mustStore(t, s, id, []byte("x"))
	mustStore(t, s, other, []byte("y"))
	for i := range 2 {
		if err := s.Remove(bg, id); err != nil {
			t.Fatalf("Remove #%d: %v", i+1, err)
		}
	}
	mustMiss(t, s, id)
	mustLoad(t, s, other, []byte("y")) // removing one ID leaves others alone
}

func testEnumerateOrder(t *testing.T, s spool.Spool) {
	// Enough values to cross any chunking an implementation does, IDs that
	// differ in every byte position, and stored in random order so that
	// insertion order cannot pass for ID order.
	var ids []spool.ID
	for range 300 {
		ids = append(ids, spool.NewID())
	}
	for i := range 16 {
		var id spool.ID
		id[i] = 0xff
		ids = append(ids, id)
		id[i] = 0x01
		ids = append(ids, id)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	want := map[spool.ID][]byte{}
	for _, id := range ids {
		want[id] = value(id, 0)
		mustStore(t, s, id, want[id])
	}
	checkContents(t, s, want)
}

func testEnumerateEmpty(t *testing.T, s spool.Spool) {
	if got := enumerate(t, s); len(got) != 0 {
		t.Fatalf("Enumerate on an empty spool visited %d values", len(got))
	}
}

func testEnumerateStop(t *testing.T, s spool.Spool) {
	for range 10 {
		id := spool.NewID()
		mustStore(t, s, id, value(id, 0))
	}
	stop := errors.New("stop here")
	calls := 0
	err := s.Enumerate(bg, func(spool.ID, []byte) error {
		calls++
		if calls == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Enumerate returned %v, want the error fn returned", err)
	}
	if calls != 3 {
		t.Fatalf("fn called %d times after returning an error on call 3", calls)
	}
}

// testEnumerateCallsBack checks the recovery pattern of removing (or
// rewriting) values from inside fn.
func testEnumerateCallsBack(t *testing.T, s spool.Spool) {
	want := map[spool.ID][]byte{}
	for i := range 20 {
		id := spool.NewID()
		mustStore(t, s, id, value(id, 0))
		if i%2 == 0 {
			want[id] = []byte("rewritten")
		}
	}
	err := s.Enumerate(bg, func(id spool.ID, _ []byte) error {
		if _, keep := want[id]; keep {
			return s.Store(bg, id, []byte("rewritten"))
		}
		return s.Remove(bg, id)
	})
	if err != nil {
		t.Fatalf("Enumerate with fn calling Store and Remove: %v", err)
	}
	checkContents(t, s, want)
}

// testEnumerateIDs checks spool.EnumerateIDs (the spool's IDEnumerator,
// if it has one): every ID once, in order, removed ones left out.
func testEnumerateIDs(t *testing.T, s spool.Spool) {
	var want []spool.ID
	for i := range 30 {
		id := spool.NewID()
		mustStore(t, s, id, value(id, 10))
		if i%3 == 0 {
			if err := s.Remove(bg, id); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want = append(want, id)
	}
	var got []spool.ID
	if err := spool.EnumerateIDs(bg, s, func(id spool.ID) error {
		got = append(got, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("EnumerateIDs gave %d IDs, want %d in ascending order without the removed ones", len(got), len(want))
	}
}

// testStoreAfterRemove checks that Store replaces any previous value,
// including a removal: the ID is back for Load and Enumerate.
func testStoreAfterRemove(t *testing.T, s spool.Spool) {
	id := spool.NewID()
	mustStore(t, s, id, []byte("first"))
	if err := s.Remove(bg, id); err != nil {
		t.Fatal(err)
	}
	mustStore(t, s, id, []byte("second"))
	mustLoad(t, s, id, []byte("second"))
	checkContents(t, s, map[spool.ID][]byte{id: []byte("second")})
}

// testStoreAfterRemoveWhileEnumerating is the same while an enumeration is
// in progress on another goroutine, and then while enumerations overlap.
func testStoreAfterRemoveWhileEnumerating(t *testing.T, s spool.Spool) {
	first, k := spool.NewID(), spool.NewID()
	mustStore(t, s, first, []byte("first"))
	mustStore(t, s, k, []byte("old"))

	inFn, resume := make(chan struct{}), make(chan struct{})
	seen := map[spool.ID]string{}
	done := make(chan error, 1)
	go func() {
		done <- s.Enumerate(bg, func(id spool.ID, v []byte) error {
			if id == first {
				close(inFn)
				<-resume
			}
			seen[id] = string(v)
			return nil
		})
	}()
	<-inFn
	var once sync.Once
	release := func() { once.Do(func() { close(resume) }) }
	defer release() // a failure below must not leave the enumeration blocked
	for round := range 3 {
		if err := s.Remove(bg, k); err != nil {
			t.Fatal(err)
		}
		v := []byte(fmt.Sprintf("new %d", round))
		mustStore(t, s, k, v)
		mustLoad(t, s, k, v)
		// A second, overlapping enumeration sees the value too.
		checkContents(t, s, map[spool.ID][]byte{first: []byte("first"), k: v})
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if seen[k] != "new 2" {
		t.Errorf("enumeration in progress visited the re-stored ID with %q, want its current value %q", seen[k], "new 2")
	}
	mustLoad(t, s, k, []byte("new 2"))
	checkContents(t, s, map[spool.ID][]byte{first: []byte("first"), k: []byte("new 2")})
}

// testChangesDuringEnumerate checks what fn sees of changes made (by fn)
// to IDs it has not reached yet: a removed ID is not visited, and a
// re-stored one is visited with its current value.
func testChangesDuringEnumerate(t *testing.T, s spool.Spool) {
	ids := make([]spool.ID, 10)
	for i := range ids {
		ids[i] = spool.NewID()
		mustStore(t, s, ids[i], []byte("old"))
	}
	got := map[spool.ID]string{}
	err := s.Enumerate(bg, func(id spool.ID, v []byte) error {
		got[id] = string(v)
		if id != ids[0] {
			return nil
		}
		if err := s.Remove(bg, ids[5]); err != nil {
			return err
		}
		if err := s.Remove(bg, ids[6]); err != nil {
			return err
		}
		if err := s.Store(bg, ids[6], []byte("back")); err != nil {
			return err
		}
		return s.Store(bg, ids[7], []byte("rewritten"))
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := got[ids[5]]; ok {
		t.Errorf("removed ID visited with %q", v)
	}
	if got[ids[6]] != "back" || got[ids[7]] != "rewritten" {
		t.Errorf("re-stored IDs visited with %q and %q, want %q and %q", got[ids[6]], got[ids[7]], "back", "rewritten")
	}
	if len(got) != 9 {
		t.Errorf("visited %d IDs, want 9", len(got))
	}
}

func testEmptyValue(t *testing.T, s spool.Spool) {
	empty, nilled := spool.NewID(), spool.NewID()
	mustStore(t, s, empty, []byte{})
	mustStore(t, s, nilled, nil)
	for _, id := range []spool.ID{empty, nilled} {
		got, err := s.Load(bg, id)
		if err != nil || len(got) != 0 {
			t.Fatalf("Load(%s) of an empty value = %s, %v; want empty, nil", id, summary(got), err)
		}
	}
	if got := enumerate(t, s); len(got) != 2 {
		t.Fatalf("Enumerate visited %d values, want the 2 empty ones", len(got))
	}
}

func testLargeValue(t *testing.T, s spool.Spool) {
	big := make([]byte, Large)
	for i := range big {
		big[i] = byte(rand.Uint32()) // incompressible, like an attachment
	}
	id := spool.NewID()
	mustStore(t, s, id, big)
	mustLoad(t, s, id, big)
	checkContents(t, s, map[spool.ID][]byte{id: big})
}

func testBufferOwnership(t *testing.T, s spool.Spool) {
	id := spool.NewID()
	buf := []byte("original")
	mustStore(t, s, id, buf)
	copy(buf, "MUTATED!")
	mustLoad(t, s, id, []byte("original"))

	got, err := s.Load(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	copy(got, "MUTATED!")
	mustLoad(t, s, id, []byte("original"))

	err = s.Enumerate(bg, func(_ spool.ID, data []byte) error {
		copy(data, "MUTATED!")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mustLoad(t, s, id, []byte("original"))
}

func testConcurrent(t *testing.T, s spool.Spool) {
	const workers, perWorker = 8, 40
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		want = map[spool.ID][]byte{}
		done = make(chan struct{})
	)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := spool.NewID()
				v := value(id, 1000+w*perWorker+i)
				if err := s.Store(bg, id, v); err != nil {
					t.Errorf("Store: %v", err)
					return
				}
				if got, err := s.Load(bg, id); err != nil || !bytes.Equal(got, v) {
					t.Errorf("Load(%s) after Store = %s, %v", id, summary(got), err)
					return
				}
				switch i % 3 {
				case 0:
					if err := s.Remove(bg, id); err != nil {
						t.Errorf("Remove: %v", err)
						return
					}
					if _, err := s.Load(bg, id); !errors.Is(err, spool.ErrNotFound) {
						t.Errorf("Load(%s) after Remove: %v", id, err)
						return
					}
					continue
				case 1:
					v = value(id, 500)
					if err := s.Store(bg, id, v); err != nil {
						t.Errorf("overwriting Store: %v", err)
						return
					}
				}
				mu.Lock()
				want[id] = v
				mu.Unlock()
			}
		})
	}
	// A reader enumerates while the writers work: it must see ascending
	// IDs and never fail.
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			var last spool.ID
			err := s.Enumerate(bg, func(id spool.ID, _ []byte) error {
				if compareIDs(id, last) <= 0 {
					return fmt.Errorf("id %s after %s", id, last)
				}
				last = id
				return nil
			})
			if err != nil {
				t.Errorf("concurrent Enumerate: %v", err)
				return
			}
		}
	})
	wg.Wait()
	close(done)
	readers.Wait()
	if t.Failed() {
		return
	}
	checkContents(t, s, want)
}

func testCanceledContext(t *testing.T, s spool.Spool) {
	ctx, cancel := context.WithCancel(bg)
	cancel()
	id := spool.NewID()
	if err := s.Store(ctx, id, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Store with a canceled context = %v, want error wrapping context.Canceled", err)
	}
	mustMiss(t, s, id)

	mustStore(t, s, id, []byte("x"))
	if _, err := s.Load(ctx, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load with a canceled context = %v, want error wrapping context.Canceled", err)
	}
	called := false
	err := s.Enumerate(ctx, func(spool.ID, []byte) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Fatalf("Enumerate with a canceled context = %v (fn called: %v), want error wrapping context.Canceled", err, called)
	}
}

func testClosed(t *testing.T, s spool.Spool) {
	id := spool.NewID()
	mustStore(t, s, id, []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, spool.ErrClosed) {
			t.Errorf("%s after Close = %v, want error wrapping spool.ErrClosed", op, err)
		}
	}
	check("Store", s.Store(bg, id, []byte("y")))
	_, err := s.Load(bg, id)
	check("Load", err)
	check("Remove", s.Remove(bg, id))
	check("Enumerate", s.Enumerate(bg, func(spool.ID, []byte) error { return nil }))
	if err := s.Close(); err != nil && !errors.Is(err, spool.ErrClosed) {
		t.Errorf("second Close = %v, want nil or spool.ErrClosed", err)
	}
}

func testCloseWhileBusy(t *testing.T, s spool.Spool) {
	_, _ = storeUntilClosed(t, s)
}

// storeUntilClosed runs writers against s, closes s while they run, and
// returns what the writers were told was stored (the last value per ID).
// Every write must either succeed or fail with ErrClosed.
func storeUntilClosed(t *testing.T, s spool.Spool) (map[spool.ID][]byte, bool) {
	t.Helper()
	const workers = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stored  = map[spool.ID][]byte{}
		started = make(chan struct{}, workers)
	)
	for range workers {
		wg.Go(func() {
			// Signal exactly once, also on an early return, so the
			// closer below never waits forever.
			signalled := false
			signal := func() {
				if !signalled {
					signalled = true
					started <- struct{}{}
				}
			}
			defer signal()
			for n := 0; ; n++ {
				id := spool.NewID()
				v := value(id, 2048)
				err := s.Store(bg, id, v)
				if errors.Is(err, spool.ErrClosed) {
					return
				}
				if err != nil {
					t.Errorf("Store during Close = %v, want nil or spool.ErrClosed", err)
					return
				}
				mu.Lock()
				stored[id] = v
				mu.Unlock()
				if n == 5 {
					signal()
				}
			}
		})
	}
	for range workers {
		<-started // make sure Close races with real work
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close while busy: %v", err)
	}
	wg.Wait()
	return stored, !t.Failed()
}

func testReopen(t *testing.T, open func(t *testing.T, dir string) spool.Spool) {
	dir := t.TempDir()
	s := open(t, dir)
	want := map[spool.ID][]byte{}
	var removed []spool.ID
	for i := range 200 {
		id := spool.NewID()
		v := value(id, 100+i)
		if i == 7 {
			v = value(id, Large)
		}
		mustStore(t, s, id, v)
		switch i % 5 {
		case 0:
			if err := s.Remove(bg, id); err != nil {
				t.Fatal(err)
			}
			removed = append(removed, id)
			continue
		case 1:
			v = []byte("overwritten " + id.String())
			mustStore(t, s, id, v)
		}
		want[id] = v
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s = open(t, dir)
	checkContents(t, s, want)
	for id, v := range want {
		mustLoad(t, s, id, v)
	}
	for _, id := range removed {
		mustMiss(t, s, id)
	}
	// The reopened spool is fully usable, and so is the next one.
	id := spool.NewID()
	mustStore(t, s, id, []byte("after reopen"))
	want[id] = []byte("after reopen")
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s = open(t, dir)
	defer s.Close()
	checkContents(t, s, want)
}

// testCloseKeepsAcknowledged checks that Close waits for in-flight writes:
// every Store that returned nil, even one racing with Close, is there after
// reopening.
func testCloseKeepsAcknowledged(t *testing.T, open func(t *testing.T, dir string) spool.Spool) {
	dir := t.TempDir()
	stored, ok := storeUntilClosed(t, open(t, dir))
	if !ok {
		return
	}
	s := open(t, dir)
	defer s.Close()
	checkContents(t, s, stored)
}
