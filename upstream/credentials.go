package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ctxgate/ctxgate/config"
)

// withCredentials wraps base so every request carries the gateway's own
// credential for this upstream. The client's credentials never get here:
// the gateway forwards an allow-list of headers that excludes them.
// Secrets are read once, now, so a missing file fails start-up.
//
// token_exchange and user_oauth call the upstream as the caller instead:
// their source is returned too, for Upstream.Prepare.
func withCredentials(base http.RoundTripper, name string, c *config.Credentials, grants *GrantStore) (http.RoundTripper, userCredential, error) {
	switch {
	case c == nil:
		return base, nil, nil
	case c.OAuth2ClientCredentials != nil:
		t, err := clientCredentialsTransport(base, c.OAuth2ClientCredentials)
		return t, nil, err
	case c.Header != nil:
		value, err := secret(c.Header.Value, c.Header.ValueFile)
		if err != nil {
			return nil, nil, fmt.Errorf("credentials.header.value_file: %w", err)
		}
		return &headerTransport{base: base, name: http.CanonicalHeaderKey(c.Header.Name), value: value}, nil, nil
	case c.TokenExchange != nil:
		x, err := newTokenExchange(name, c.TokenExchange)
		if err != nil {
			return nil, nil, err
		}
		return &callerTransport{base: base, src: x}, x, nil
	case c.UserOAuth != nil:
		conn, err := newConnector(name, c.UserOAuth, grants)
		if err != nil {
			return nil, nil, err
		}
		return &callerTransport{base: base, src: conn}, conn, nil
	}
	return base, nil, nil
}

// clientCredentialsTransport obtains a token with the OAuth 2.0 client
// credentials grant and refreshes it before it expires (oauth2's reusing
// token source); every upstream request carries the current token.
func clientCredentialsTransport(base http.RoundTripper, cc *config.OAuth2ClientCredentials) (http.RoundTripper, error) {
	secret, err := secret(cc.ClientSecret, cc.ClientSecretFile)
	if err != nil {
		return nil, fmt.Errorf("credentials.oauth2_client_credentials.client_secret_file: %w", err)
	}
	conf := &clientcredentials.Config{
		ClientID:     cc.ClientID,
		ClientSecret: secret,
		TokenURL:     cc.TokenURL,
		Scopes:       cc.Scopes,
	}
	if cc.Resource != "" {
		conf.EndpointParams = url.Values{"resource": {cc.Resource}} // RFC 8707
	}
	// The token endpoint is called with a plain client of its own: never
	// through this upstream's transport, and without following redirects.
	tokenClient := &http.Client{
		Transport:     http.DefaultTransport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, tokenClient)
	return &oauth2.Transport{Source: conf.TokenSource(ctx), Base: base}, nil
}

// secret returns the inline value or the file's content (trailing newline
// trimmed, as editors add one).
func secret(inline, file string) (string, error) {
	if file == "" {
		return inline, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("read secret: %w", err)
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", errors.New("secret file " + file + " is empty")
	}
	return v, nil
}

// headerTransport sets one static header on every request.
type headerTransport struct {
	base        http.RoundTripper
	name, value string
}

func (t *headerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context()) // a RoundTripper must not modify its request
	req.Header.Set(t.name, t.value)
	return t.base.RoundTrip(req)
}

// CloseIdleConnections reaches the wrapped transport.
func (t *headerTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
