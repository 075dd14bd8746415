package postgres

// OnOpenGroup has f called with the size of each group of session opens
// before it runs (session_open.go); f may hold the group back.
func (db *DB) OnOpenGroup(f func(n int)) {
	db.opens.mu.Lock()
	defer db.opens.mu.Unlock()
	db.opens.groups = f
}

// QueuedOpens is the number of session opens waiting for a group.
func (db *DB) QueuedOpens() int {
	db.opens.mu.Lock()
	defer db.opens.mu.Unlock()
	return len(db.opens.queue)
}
