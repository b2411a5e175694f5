package mailer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
)

// Kinds of relay fault: answers that show the relay (or our account on it),
// not the recipient, is the problem, so that every recipient would get the
// same answer.
const (
	RelayConnect = "connect" // a permanent refusal while connecting (greeting, EHLO), or TLS that cannot work
	RelayAuth    = "auth"    // authentication required or refused (530, 535, a failed AUTH)
	RelaySender  = "sender"  // MAIL FROM refused: it names the sender, not a recipient
	RelayPolicy  = "policy"  // a policy refusal (5.7.x, "relay …") at RCPT or DATA
)

// Relay reports whether e may be a relay fault: kind is one of the Relay
// constants, or "" for an answer about the recipient (5.1.1 no such user,
// 5.2.2 mailbox full, …), a transient failure (retried anyway) or our own
// error. certain is true when one such answer is proof: a refusal before
// any recipient was named, or authentication. A policy answer (5.7.1 at
// RCPT) may concern one recipient only: the caller decides by seeing it
// repeat for many different recipients.
func (e *Error) Relay() (kind string, certain bool) {
	if e == nil || e.Stage == StageBuild {
		return "", false
	}
	if e.Code == 530 || e.Code == 535 || e.Code == 538 || (e.Stage == StageAuth && e.Code >= 500) {
		return RelayAuth, true
	}
	if e.Code == 0 && (e.Stage == StageConnect || e.Stage == StageAuth) && setupConfigError(e) {
		// Not a network blip but something no retry changes: a
		// certificate that does not verify, STARTTLS required but not
		// offered, no AUTH mechanism in common.
		if e.Stage == StageAuth {
			return RelayAuth, true
		}
		return RelayConnect, true
	}
	if e.Code < 500 {
		return "", false // 4xx and network errors are retried as they are
	}
	switch e.Stage {
	case StageConnect:
		return RelayConnect, true
	case StageMail:
		return RelaySender, true
	}
	if strings.HasPrefix(e.Enhanced, "5.7.") || (e.Enhanced == "" && strings.Contains(strings.ToLower(e.Text), "relay")) {
		return RelayPolicy, false
	}
	return "", false
}

// setupConfigError reports whether a connection set-up error without an
// SMTP code is a setting that cannot work rather than a network failure.
func setupConfigError(e *Error) bool {
	var cv *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	if errors.As(e, &cv) || errors.As(e, &ua) || errors.As(e, &he) || errors.As(e, &ci) {
		return true
	}
	var ne net.Error
	if errors.As(e, &ne) || errors.Is(e, io.EOF) || errors.Is(e, io.ErrUnexpectedEOF) ||
		errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
		return false
	}
	return e.Stage == StageAuth || strings.Contains(strings.ToUpper(e.Text), "STARTTLS")
}
