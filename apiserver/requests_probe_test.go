package apiserver_test

import (
	"fmt"
	"net/http"
	"testing"
)

func requestBody(device, service string) string {
	return fmt.Sprintf(`{"device":%q,"service":%q,"duration":"1h","reason":"fix it"}`, device, service)
}

// TestRequestsDoNotRevealDevices: issue 10 found POST /requests answering
// 201 for an existing device and 404 for a missing one, so a vendor could
// list the device names of the whole fleet. To someone who cannot see the
// device, both answers are alike.
func TestRequestsDoNotRevealDevices(t *testing.T) {
	f := newFixture(t)
	existing, _ := f.call(t, kVendor, "POST", "/api/v1/requests", "application/json", requestBody("alpha", "ssh"))
	missing, body := f.call(t, kVendor, "POST", "/api/v1/requests", "application/json", requestBody("no-such-device", "ssh"))
	if existing != missing {
		t.Fatalf("vendor's request for a device it cannot see: %d if it exists, %d (%s) if not; want the same", existing, missing, body)
	}
	// Who sees every device learns nothing new by a 404.
	if code, _ := f.call(t, kAdmin, "POST", "/api/v1/requests", "application/json", requestBody("no-such-device", "ssh")); code != http.StatusNotFound {
		t.Errorf("admin's request for a missing device: %d, want 404", code)
	}
}

// TestRequestsLimitedPerUser: each request lands in the approvers' queue;
// one person cannot flood it.
func TestRequestsLimitedPerUser(t *testing.T) {
	f := newFixture(t)
	limited := false
	for i := range 40 {
		code, _ := f.call(t, kVendor, "POST", "/api/v1/requests", "application/json", requestBody("alpha", fmt.Sprintf("svc-%d", i)))
		if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
			limited = true
			break
		}
		if code != http.StatusCreated {
			t.Fatalf("request %d: %d", i+1, code)
		}
	}
	if !limited {
		t.Fatal("40 access requests from one person in a row were all filed")
	}
}
