package recipes

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/regkit/regkit/registry"
)

// Errors a Hold's context is cancelled with (read them with context.Cause or
// Hold.Err), next to the session's own error, which wraps registry.ErrSessionLost
// (the session expired or was revoked) or registry.ErrClosed (its owner closed it).
var (
	// ErrSuspended: the session's connection was interrupted while holding, so the
	// holder can no longer be sure it holds (the default Policy, SuspendedIsLost).
	ErrSuspended = errors.New("recipes: session suspended, holding no longer certain")
	// ErrReleased: the holder released (Unlock, Resign, Close).
	ErrReleased = errors.New("recipes: released")
)

// Policy says which session states end a Hold: Curator's connection-state error
// policies.
type Policy int

const (
	// SuspendedIsLost (the default, Curator's StandardConnectionStateErrorPolicy)
	// ends a Hold at the first sign of trouble: the session is Suspended (its
	// connection interrupted; the server may expire it any moment and hand the lock
	// to someone else), lost or closed. A holder then never acts while another may
	// hold, as long as its process is not paused longer than the margin between
	// suspension and expiry (see the package doc for each backend's margin).
	SuspendedIsLost Policy = iota
	// LostOnly (Curator's SessionConnectionStateErrorPolicy) ends a Hold only when
	// the session is lost or closed. It rides out short interruptions, but a holder
	// cut off from the server keeps believing it holds until its driver gives the
	// session up, which may be after the server has already expired it and another
	// holder took over: only a fenced resource protects against that window.
	LostOnly
)

// String returns the policy's name.
func (p Policy) String() string {
	switch p {
	case SuspendedIsLost:
		return "suspended-is-lost"
	case LostOnly:
		return "lost-only"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Hold is one acquisition of a lock or one term of leadership: the key that holds
// it, its fencing token, and a context that is cancelled the moment the holder can
// no longer be sure it holds (session suspended, under the default policy; lost or
// closed; released).
//
// Pass Token to every resource the holder writes to, and have the resource reject
// any token lower than the highest it has accepted (a fenced resource): that is
// the only protection against a holder that has not yet noticed it lost (its
// process paused, its clock or network slow; see the package doc for each
// backend's window). Check Context before and during the work done while holding;
// it never comes back once cancelled.
//
// A Hold is safe for concurrent use.
type Hold struct {
	key    string
	token  int64
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // the session watcher ended
	once   sync.Once
	s      *registry.Session
	p      Policy
}

// Key returns the store key whose existence is the holding (the lock node, the
// candidate's node).
func (h *Hold) Key() string { return h.key }

// Token returns the fencing token: the CreateRevision of Key's node. Tokens of
// successive holders of the same lock or election only grow, and they never repeat
// for the life of the store (see registry.Node.CreateRevision).
func (h *Hold) Token() int64 { return h.token }

// Context returns the context cancelled when the holding ends or becomes
// uncertain; context.Cause says why (ErrSuspended, ErrReleased, or the session's
// error wrapping registry.ErrSessionLost or registry.ErrClosed).
func (h *Hold) Context() context.Context { return h.ctx }

// Done is Context().Done().
func (h *Hold) Done() <-chan struct{} { return h.ctx.Done() }

// Err is nil while the holding is certain, then why it ended (the Context's cause).
// It reads the session's state itself, so it is not nil once the session has
// reported an end (or, under SuspendedIsLost, a suspension), even before the
// Context learns of it.
func (h *Hold) Err() error {
	if h.ctx.Err() == nil {
		if h.s == nil {
			return nil
		}
		cause := holdEnded(h.s, h.s.State(), h.p)
		if cause == nil {
			return nil
		}
		h.cancel(cause)
	}
	return context.Cause(h.ctx)
}

// String describes the hold for logs.
func (h *Hold) String() string {
	if err := h.Err(); err != nil {
		return fmt.Sprintf("%s (token %d, ended: %v)", h.key, h.token, err)
	}
	return fmt.Sprintf("%s (token %d)", h.key, h.token)
}

// NewHold starts a Hold on key with token, bound to session s under policy p: its
// context is cancelled by the returned release function (with the given cause; nil
// means ErrReleased) or by the session, as p says. If the session has already
// ended, or is suspended under SuspendedIsLost, the Hold starts cancelled. release
// waits for the Hold's goroutine and is idempotent. NewHold is for writing
// recipes; users get Holds from them.
func NewHold(s *registry.Session, key string, token int64, p Policy) (h *Hold, release func(cause error)) {
	ctx, cancel := context.WithCancelCause(context.Background())
	h = &Hold{key: key, token: token, ctx: ctx, cancel: cancel, done: make(chan struct{}), s: s, p: p}
	release = func(cause error) {
		if cause == nil {
			cause = ErrReleased
		}
		h.cancel(cause)
		<-h.done
	}
	changed, stop := nextChange(s) // subscribe before reading the state
	if cause := holdEnded(s, s.State(), p); cause != nil {
		stop()
		cancel(cause)
		close(h.done)
		return h, release
	}
	go func() {
		defer close(h.done)
		for {
			select {
			case <-ctx.Done():
				stop()
				return
			case <-s.Done():
				stop()
				cancel(sessionEnded(s))
				return
			case <-changed:
				stop()
				st := s.State()
				if p == SuspendedIsLost && s.Err() == nil {
					// Any change from a good state went through a suspension, even
					// if it reads Reconnected by now.
					cancel(fmt.Errorf("recipes: session %s became %s: %w", s.ID(), st, ErrSuspended))
					return
				}
				if cause := holdEnded(s, st, p); cause != nil {
					cancel(cause)
					return
				}
				changed, stop = nextChange(s)
				if cause := holdEnded(s, s.State(), p); cause != nil {
					stop()
					cancel(cause)
					return
				}
			}
		}
	}()
	return h, release
}

// holdEnded returns why a Hold cannot (go on) in session state st, or nil.
func holdEnded(s *registry.Session, st registry.SessionState, p Policy) error {
	if s.Err() != nil || st == registry.StateLost || st == registry.StateClosed {
		return sessionEnded(s)
	}
	if st == registry.StateSuspended && p == SuspendedIsLost {
		return fmt.Errorf("recipes: session %s suspended: %w", s.ID(), ErrSuspended)
	}
	return nil
}

// sessionEnded is the error of an ended (or ending) session.
func sessionEnded(s *registry.Session) error {
	if err := s.Err(); err != nil {
		return err
	}
	// Reported lost before Done closed.
	return fmt.Errorf("recipes: session %s: %s: %w", s.ID(), s.State(), registry.ErrSessionLost)
}

// Usable waits until the session can be used to acquire under policy p: it returns
// nil at once while the session is connected (or, under LostOnly, merely
// suspended); under SuspendedIsLost it waits for a suspended session to reconnect.
// It returns the session's error once the session ended, or ctx's. Recipes call it
// before handing out a Hold, so a Hold is not born cancelled.
func Usable(ctx context.Context, s *registry.Session, p Policy) error {
	for {
		changed, stop := nextChange(s)
		cause := holdEnded(s, s.State(), p)
		if cause == nil {
			stop()
			return nil
		}
		if !errors.Is(cause, ErrSuspended) {
			stop()
			return cause
		}
		select {
		case <-changed:
		case <-s.Done():
		case <-ctx.Done():
			stop()
			return ctx.Err()
		}
		stop()
	}
}
