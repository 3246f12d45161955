package policy

import (
	"context"
	"time"
)

// Reload checks the policy source once and, when its files changed, loads,
// compiles and prepares the new set and swaps it in atomically: decisions
// in flight finish with the set they started with. It reports whether a
// new revision now decides. On error the previous set keeps deciding and
// the error is recorded in Status; an unchanged broken set is not retried
// until its files change again. The reload loop calls Reload every
// ReloadInterval; it is safe to call at any time (an admin endpoint, a
// SIGHUP handler, a test). With OPA bundles it does nothing: OPA's bundle
// plugin polls the bundle service.
func (e *Engine) Reload(ctx context.Context) (bool, error) {
	if e.fromBundles {
		return false, nil // OPA's bundle plugin polls the bundle service
	}
	changed, err := e.reload(ctx)
	if e.onReload != nil && (changed || err != nil) {
		// Outside reloadMu, so the hook may read Status.
		e.onReload(e.Revision(), err)
	}
	return changed, err
}

// reload is Reload under reloadMu.
func (e *Engine) reload(ctx context.Context) (bool, error) {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()
	hash, err := e.src.fingerprint()
	if err != nil {
		e.reloadFailed(err)
		return false, err
	}
	if hash == e.srcHash {
		return false, nil
	}
	e.srcHash = hash
	set, err := e.load(ctx)
	if err != nil {
		e.reloadFailed(err)
		return false, err
	}
	e.status.LastReloadAt = set.loadedAt
	e.status.LastReloadError = ""
	if set.revision == e.status.Revision {
		return false, nil
	}
	e.set.Store(set)
	e.status.Revision, e.status.LoadedAt = set.revision, set.loadedAt
	e.status.Reloads++
	return true, nil
}

// reloadFailed records a rejected reload; reloadMu is held.
func (e *Engine) reloadFailed(err error) {
	e.status.LastReloadAt = e.now()
	e.status.LastReloadError = err.Error()
	e.status.ReloadFailures++
}

// reloadLoop calls Reload every interval until ctx ends (Close).
func (e *Engine) reloadLoop(ctx context.Context, interval time.Duration) {
	defer close(e.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		old := e.Revision()
		switch changed, err := e.Reload(ctx); {
		case ctx.Err() != nil:
			return // closed during a reload: nothing to report
		case err != nil:
			e.logger.Error("policy reload rejected; the previous policy keeps deciding",
				"revision", old, "error", err.Error())
		case changed:
			e.logger.Info("policy reloaded", "revision", e.Revision(), "previous_revision", old)
		}
	}
}
