package broker

import (
	"fmt"
	"testing"

	"github.com/fieldpass/fieldpass/postgres"
)

// spread evens the live brokers out, the least loaded first, and gives the
// same split for the same inputs in any order.
func TestSpread(t *testing.T) {
	cbs := func(n int) []postgres.Callback {
		out := make([]postgres.Callback, n)
		for i := range out {
			out[i].DeviceID = fmt.Sprintf("00000000-0000-0000-0000-%012d", n-i) // reverse order
		}
		return out
	}
	for _, c := range []struct {
		name    string
		devices int
		loads   []postgres.BrokerLoad
		want    map[string]int
	}{
		{"even", 10, []postgres.BrokerLoad{{ID: "broker-c", Devices: 0}, {ID: "broker-a", Devices: 0}}, map[string]int{"broker-a": 5, "broker-c": 5}},
		{"odd, first by id", 5, []postgres.BrokerLoad{{ID: "broker-c", Devices: 0}, {ID: "broker-a", Devices: 0}}, map[string]int{"broker-a": 3, "broker-c": 2}},
		{"the less loaded first", 6, []postgres.BrokerLoad{{ID: "broker-a", Devices: 4}, {ID: "broker-c", Devices: 0}}, map[string]int{"broker-a": 1, "broker-c": 5}},
		{"too few to even out", 2, []postgres.BrokerLoad{{ID: "broker-a", Devices: 9}, {ID: "broker-c", Devices: 0}}, map[string]int{"broker-c": 2}},
		{"one left", 3, []postgres.BrokerLoad{{ID: "broker-a", Devices: 7}}, map[string]int{"broker-a": 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, y := cbs(c.devices), cbs(c.devices)
			y[0], y[len(y)-1] = y[len(y)-1], y[0]
			spread(x, c.loads)
			spread(y, c.loads)
			got := map[string]int{}
			for i := range x {
				got[x[i].BrokerID]++
				if x[i] != y[i] {
					t.Errorf("device %d: %+v in one order, %+v in another", i, x[i], y[i])
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("split %v, want %v", got, c.want)
			}
		})
	}
}
