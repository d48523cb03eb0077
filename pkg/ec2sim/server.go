package ec2sim

import (
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

const xmlns = "http://ec2.amazonaws.com/doc/2016-11-15/"

// params wraps the form values of one request.
type params url.Values

func (p params) get(k string) string { return url.Values(p).Get(k) }

func (p params) bool(k string) bool { v, _ := strconv.ParseBool(p.get(k)); return v }

func (p params) hasPrefix(prefix string) bool {
	for k := range p {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// list reads a flat list such as InstanceId.1, InstanceId.2.
func (p params) list(prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := p[fmt.Sprintf("%s.%d", prefix, i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

type filter struct {
	name   string
	values []string
}

func (p params) filters() []filter {
	var out []filter
	for i := 1; ; i++ {
		name := p.get(fmt.Sprintf("Filter.%d.Name", i))
		if name == "" {
			return out
		}
		out = append(out, filter{name: name, values: p.list(fmt.Sprintf("Filter.%d.Value", i))})
	}
}

// tagSpecs reads TagSpecification.N.ResourceType / .Tag.M.Key / .Value.
func (p params) tagSpecs() map[string]map[string]string {
	out := map[string]map[string]string{}
	for i := 1; ; i++ {
		rt := p.get(fmt.Sprintf("TagSpecification.%d.ResourceType", i))
		if rt == "" {
			return out
		}
		if out[rt] == nil {
			out[rt] = map[string]string{}
		}
		for j := 1; ; j++ {
			k, ok := p[fmt.Sprintf("TagSpecification.%d.Tag.%d.Key", i, j)]
			if !ok {
				break
			}
			out[rt][k[0]] = p.get(fmt.Sprintf("TagSpecification.%d.Tag.%d.Value", i, j))
		}
	}
}

type apiError struct {
	status    int
	code, msg string
}

func errf(code, format string, args ...any) *apiError {
	return &apiError{status: statusFor(code), code: code, msg: fmt.Sprintf(format, args...)}
}

// call is one request's context.
type call struct {
	account, region, action string
	p                       params
	r                       *regionState
	out                     *xmlw
}

var credRE = regexp.MustCompile(`Credential=([^/,\s]+)/[0-9]{8}/([a-z0-9-]+)/`)
var accountRE = regexp.MustCompile(`^[0-9]{12}$`)

// identity derives the account (a 12-digit access key ID is the account)
// and the Region (the SigV4 credential scope) of a request.
func identity(r *http.Request) (string, string) {
	m := credRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return DefaultAccount, DefaultRegion
	}
	account := DefaultAccount
	if accountRE.MatchString(m[1]) {
		account = m[1]
	}
	return account, m[2]
}

// ServeHTTP serves the EC2 Query protocol on POST / and the control API
// under /_sim/.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.serveControl(w, r)
		return
	}
	if s.opts.Latency > 0 {
		time.Sleep(s.opts.Latency)
	}
	if strings.HasPrefix(r.Header.Get("X-Amz-Target"), "TrentService.") {
		s.serveKMS(w, r)
		return
	}
	if strings.HasPrefix(r.Header.Get("X-Amz-Target"), "AWSStepFunctions.") {
		s.serveSFN(w, r)
		return
	}
	if err := r.ParseForm(); err != nil {
		writeError(w, "", errf("InvalidParameterValue", "cannot parse request: %v", err))
		return
	}
	p := params(r.Form)
	account, region := identity(r)
	api := apiFor(r, p) // EC2, or Auto Scaling / ELBv2 (query.go)
	c := &call{account: account, region: region, action: p.get("Action"), p: p}
	s.mu.Lock()
	s.reqSeq++
	reqID := fmt.Sprintf("sim-%08d-0000-4000-8000-%012d", s.reqSeq, s.reqSeq)
	handler, known := api.actions[c.action]
	if !known {
		s.mu.Unlock()
		api.writeError(w, reqID, errf("InvalidAction", "The action %s is not valid for this web service.", c.action))
		return
	}
	dry := p.bool("DryRun")
	// A throttled request is counted apart: the call log's per-action
	// counts are the requests EC2 accepted, so API efficiency can be
	// asserted independently of how often the retryer had to wait.
	if !s.take(account, region, c.action, p) {
		s.calls.Total++
		s.calls.Throttled[c.action]++
		s.mu.Unlock()
		api.writeError(w, reqID, api.throttled)
		return
	}
	s.record(account, c.action, dry)
	s.sweep() // availability up to now, before this call changes anything
	s.reap()  // terminated instances' volumes, and instances no longer visible
	delay, e, after := s.matchFault(c.action, p)
	if delay > 0 {
		// Hold the call without the lock, as a slow EC2 would.
		s.mu.Unlock()
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
		s.mu.Lock()
	}
	if e != nil && after {
		// The work is done, the answer is lost: the client sees only e.
		c.r = s.region(region)
		c.out = api.newXML(c.action, reqID)
		handler(s, c)
		s.sweep()
	}
	if e != nil {
		s.calls.Faults[c.action]++
		s.mu.Unlock()
		api.writeError(w, reqID, e)
		return
	}
	c.r = s.region(region)
	c.out = api.newXML(c.action, reqID)
	e = handler(s, c)
	s.sweep() // the instant of this call's changes
	if e == nil && dry {
		e = errf("DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	s.mu.Unlock()
	if e != nil {
		api.writeError(w, reqID, e)
		return
	}
	writeXML(w, http.StatusOK, c.out.String())
}

// writeXML sends a complete document with its Content-Length, as EC2 does,
// rather than chunked: clients then know where the body ends without
// waiting for the terminating chunk.
func writeXML(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	io.WriteString(w, body)
}

func writeError(w http.ResponseWriter, reqID string, e *apiError) {
	writeXML(w, e.status, fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<Response><Errors><Error><Code>%s</Code><Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>`,
		html.EscapeString(e.code), html.EscapeString(e.msg), reqID))
}

// xmlw builds a response document.
type xmlw struct {
	b    strings.Builder
	root string
	tail string // written before the root closes (Query protocol metadata)
}

func newXML(root, reqID string) *xmlw {
	x := &xmlw{root: root}
	fmt.Fprintf(&x.b, `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+`<%s xmlns="%s"><requestId>%s</requestId>`, root, xmlns, reqID)
	return x
}

func (x *xmlw) String() string   { return x.b.String() + x.tail + "</" + x.root + ">" }
func (x *xmlw) open(tag string)  { x.b.WriteString("<" + tag + ">") }
func (x *xmlw) close(tag string) { x.b.WriteString("</" + tag + ">") }
func (x *xmlw) el(tag, v string) {
	x.b.WriteString("<" + tag + ">" + html.EscapeString(v) + "</" + tag + ">")
}
func (x *xmlw) opt(tag, v string) {
	if v != "" {
		x.el(tag, v)
	}
}
func (x *xmlw) tags(m map[string]string) {
	x.open("tagSet")
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		x.open("item")
		x.el("key", k)
		x.el("value", m[k])
		x.close("item")
	}
	x.close("tagSet")
}

func ts(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

// serveControl is the emulator's own JSON API, outside the EC2 protocol.
func (s *Sim) serveControl(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	switch {
	case r.URL.Path == "/_sim/calls" && r.Method == http.MethodGet:
		enc.Encode(s.Calls())
	case r.URL.Path == "/_sim/availability" && r.Method == http.MethodGet:
		enc.Encode(s.Availability())
	case r.URL.Path == "/_sim/calls/reset" && r.Method == http.MethodPost:
		s.ResetCalls()
		enc.Encode(map[string]bool{"ok": true})
	case r.URL.Path == "/_sim/advance" && r.Method == http.MethodPost:
		d, err := time.ParseDuration(r.URL.Query().Get("d"))
		if err != nil || d < 0 {
			w.WriteHeader(http.StatusBadRequest)
			enc.Encode(map[string]string{"error": "d must be a non-negative Go duration such as 24h"})
			return
		}
		s.Advance(d)
		enc.Encode(map[string]string{"now": s.Now().Format(time.RFC3339)})
	case r.URL.Path == "/_sim/complete" && r.Method == http.MethodPost:
		s.CompletePending()
		enc.Encode(map[string]bool{"ok": true})
	case r.URL.Path == "/_sim/state" && r.Method == http.MethodGet:
		q := r.URL.Query()
		account, region := defaults(q.Get("account"), q.Get("region"))
		enc.Encode(map[string]any{"now": s.Now(), "instances": s.Instances(account, region),
			"images": s.Images(account, region), "snapshots": s.Snapshots(account, region)})
	default:
		w.WriteHeader(http.StatusNotFound)
		enc.Encode(map[string]string{"error": "unknown control endpoint; see GET /_sim/calls, /_sim/availability, /_sim/state, POST /_sim/advance?d=, /_sim/complete, /_sim/calls/reset"})
	}
}

// glob matches EC2 filter wildcards: * any run, ? one character.
func glob(pattern, v string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == v
	}
	var re strings.Builder
	re.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			re.WriteString(".*")
		case '?':
			re.WriteString(".")
		default:
			re.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	re.WriteString("$")
	ok, _ := regexp.MatchString(re.String(), v)
	return ok
}

func anyGlob(patterns []string, v string) bool {
	for _, p := range patterns {
		if glob(p, v) {
			return true
		}
	}
	return false
}

// matchTagFilter handles tag:<key> and tag-key filters; ok=false if the
// filter is not a tag filter.
func matchTagFilter(f filter, tags map[string]string) (match, ok bool) {
	switch {
	case strings.HasPrefix(f.name, "tag:"):
		v, has := tags[strings.TrimPrefix(f.name, "tag:")]
		return has && anyGlob(f.values, v), true
	case f.name == "tag-key":
		for k := range tags {
			if anyGlob(f.values, k) {
				return true, true
			}
		}
		return false, true
	case f.name == "tag-value":
		for _, v := range tags {
			if anyGlob(f.values, v) {
				return true, true
			}
		}
		return false, true
	}
	return false, false
}

// page applies MaxResults/NextToken to n items; the token is the offset.
func page(p params, n, minMax, maxMax int) (from, to int, next string, e *apiError) {
	from = 0
	if tok := p.get("NextToken"); tok != "" {
		v, err := strconv.Atoi(strings.TrimPrefix(tok, "sim-"))
		if err != nil || v < 0 || v > n {
			return 0, 0, "", errf("InvalidParameterValue", "Invalid value '%s' for nextToken", tok)
		}
		from = v
	}
	to = n
	if m := p.get("MaxResults"); m != "" {
		v, err := strconv.Atoi(m)
		if err != nil || v < minMax || v > maxMax {
			return 0, 0, "", errf("InvalidParameterValue", "Value ( %s ) for parameter maxResults is invalid. Expecting a value between %d and %d.", m, minMax, maxMax)
		}
		if from+v < n {
			to = from + v
			next = fmt.Sprintf("sim-%d", to)
		}
	}
	return from, to, next, nil
}
