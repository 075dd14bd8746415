package broker_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fieldpass/fieldpass"
)

// BenchmarkSessionOpenConcurrent measures session opens per second and the
// latency of one open (the grant check, the committed session row and its
// session.start audit event, the session made live) with 1, 2, 4, 16 and 64
// clients opening at once; each client ends its session after opening it,
// so the ends and their session.end events share the database as they do
// in service. No stream is opened: BenchmarkSessionOpen measures that.
func BenchmarkSessionOpenConcurrent(b *testing.B) {
	se := newSessionEnv(b, nil)
	se.grant(time.Time{}, "echo")
	ctx := context.Background()
	for _, clients := range []int{1, 2, 4, 16, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			var (
				mu   sync.Mutex
				lats []time.Duration
				wg   sync.WaitGroup
				errc = make(chan error, clients)
				next = make(chan struct{})
			)
			b.ResetTimer()
			start := time.Now()
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var mine []time.Duration
					for range next {
						t0 := time.Now()
						s, err := se.m.Open(ctx, &fieldpass.Caller{User: se.user}, "pump-1", "echo", "127.0.0.1")
						if err != nil {
							errc <- err
							return
						}
						mine = append(mine, time.Since(t0))
						s.End(fieldpass.EndClientClosed)
					}
					mu.Lock()
					lats = append(lats, mine...)
					mu.Unlock()
				}()
			}
			for range b.N {
				next <- struct{}{}
			}
			close(next)
			wg.Wait()
			// Ends are written in the background: count them in.
			for se.m.Pending() > 0 {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			select {
			case err := <-errc:
				b.Fatal(err)
			default:
			}
			slices.Sort(lats)
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "opens/s")
			b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lats[len(lats)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
