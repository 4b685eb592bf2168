package ui

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/halapi/halapi/admin"
)

// LoginRoute is the admin route `halapi ui login` calls (POST, query
// name and ttl): it answers a LoginLink.
const LoginRoute = "/ui/login"

// LoginLink is the answer of LoginRoute.
type LoginLink struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// MaxNameLen bounds a login link's operator name.
const MaxNameLen = 64

// ValidName reports whether name may name an operator: 1-64 of letters,
// digits and . _ @ -.
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("the name must be 1 to %d characters", MaxNameLen)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._@-", r)) {
			return fmt.Errorf("invalid name %q: letters, digits and . _ @ - only", name)
		}
	}
	return nil
}

// AdminRoutes serves the console's admin route (admin.Routes).
func (c *Console) AdminRoutes(r *mux.Router) {
	r.HandleFunc(LoginRoute, c.adminLogin).Methods(http.MethodPost)
}

func (c *Console) adminLogin(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("name")
	if name == "" {
		name = "admin"
	}
	if err := ValidName(name); err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	ttl, err := admin.DurationParam(r, "ttl", DefaultLoginTTL)
	if err != nil {
		admin.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if ttl > MaxLoginTTL {
		admin.WriteError(w, http.StatusBadRequest, fmt.Sprintf("--ttl %s is longer than %s", ttl, MaxLoginTTL))
		return
	}
	tok, exp := c.tokens.issue(name, ttl)
	base := strings.TrimSuffix(c.cfg.BaseURL, "/")
	c.log.Info("ui login link issued", "name", name, "expires", exp.UTC().Format(time.RFC3339))
	admin.WriteJSON(w, http.StatusOK, LoginLink{URL: base + "/ui/login?token=" + tok, Expires: exp.UTC()})
}
