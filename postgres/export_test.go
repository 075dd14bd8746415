package postgres

// OnOpenGroup has f called with the size of each group of session opens
// before it runs (group.go, session_open.go); f may hold the group back.
func (db *DB) OnOpenGroup(f func(n int)) { db.opens.onGroup(f) }

// OnEndGroup is OnOpenGroup for session ends (session_end.go).
func (db *DB) OnEndGroup(f func(n int)) { db.ends.onGroup(f) }

// QueuedOpens is the number of session opens waiting for a group.
func (db *DB) QueuedOpens() int { return db.opens.queued() }

// QueuedEnds is the number of session ends waiting for a group.
func (db *DB) QueuedEnds() int { return db.ends.queued() }

func (g *grouper[Q]) onGroup(f func(n int)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.groups = f
}

func (g *grouper[Q]) queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}
