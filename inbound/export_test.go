package inbound

import (
	"net/http"
	"net/url"
)

// SetSNSTransport makes p fetch signing certificates and confirm
// subscriptions with client, on URLs pin accepts: tests serve a throwaway
// certificate from a loopback TLS server. Production has no way to do this
// (no setting, no exported field): its pin is SNSURL.
func SetSNSTransport(p *Providers, client *http.Client, pin func(*url.URL) bool) {
	p.sns.client = client
	p.sns.pin = pin
}

// SNSURL is the production pin.
var SNSURL = snsURL
