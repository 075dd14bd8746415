package portal_test

import (
	"testing"

	"github.com/fieldpass/fieldpass/postgres/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
