package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Schedule expressions are checked as EventBridge Scheduler documents them, so
// an expression Scheduler would reject fails at synth (and at cold start), not
// halfway through a deployment:
//
//   - "Schedule types in EventBridge Scheduler",
//     https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html
//     (rate, cron and one-time at(...) schedules);
//   - "Cron expressions reference",
//     https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html
//     (six fields: minutes 0-59, hours 0-23, day-of-month 1-31 with , - * ? / L W,
//     month 1-12 or JAN-DEC, day-of-week 1-7 or SUN-SAT with , - * ? L #,
//     year 1970-2199; '?' in exactly one of day-of-month and day-of-week; a '#'
//     day-of-week is a single expression, "3#1,6#3" is invalid);
//   - "Rate expressions reference",
//     https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-rate-expressions.html
//     (a positive value; the unit is singular for 1 and plural otherwise:
//     rate(1 hours) and rate(5 hour) are invalid).
//
// One-time at(yyyy-mm-ddThh:mm:ss) expressions are valid Scheduler
// expressions but not accepted here: every schedule in the configuration
// (backups, prune, share sweep, copy runs) must recur, and a one-time run is
// a manual request (README, section Triggers and manual runs).

// maxExpressionLength is CreateSchedule's limit on ScheduleExpression.
const maxExpressionLength = 256

var rateRE = regexp.MustCompile(`^rate\(([0-9]+) ([a-z]+)\)$`)

// cronField is one field of a cron expression.
type cronField struct {
	name     string // for messages: "minutes (1st field)"
	min, max int
	names    []string // JAN..DEC or SUN..SAT for min..max
}

var cronFields = [6]cronField{
	{name: "minutes (1st field)", min: 0, max: 59},
	{name: "hours (2nd field)", min: 0, max: 23},
	{name: "day-of-month (3rd field)", min: 1, max: 31},
	{name: "month (4th field)", min: 1, max: 12, names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}},
	{name: "day-of-week (5th field)", min: 1, max: 7, names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}},
	{name: "year (6th field)", min: 1970, max: 2199},
}

const (
	fieldDayOfMonth = 2
	fieldDayOfWeek  = 4
)

func validateSchedule(add addFunc, f string, s Schedule) {
	for _, p := range ScheduleExpressionProblems(s.Expression) {
		add(f+".expression", "%s", p)
	}
	if _, err := time.LoadLocation(s.TimeZone); err != nil || s.TimeZone == "Local" {
		add(f+".timeZone", "%q is not an IANA time zone such as \"UTC\" or \"Europe/Berlin\"", s.TimeZone)
	}
}

// ScheduleExpressionProblems returns what EventBridge Scheduler would reject
// in a recurring schedule expression, one message per problem (nil: valid).
func ScheduleExpressionProblems(expr string) []string {
	const syntax = "use \"cron(minutes hours day-of-month month day-of-week year)\" such as \"cron(0 3 * * ? *)\", or \"rate(N minutes|hours|days)\" such as \"rate(1 hour)\""
	switch {
	case expr == "":
		return []string{"is required, e.g. \"cron(0 3 * * ? *)\" (03:00 every day in timeZone)"}
	case len(expr) > maxExpressionLength:
		return []string{fmt.Sprintf("is %d characters long: EventBridge Scheduler allows at most %d", len(expr), maxExpressionLength)}
	case strings.HasPrefix(expr, "at("):
		return []string{fmt.Sprintf("%q is a one-time schedule: amibackup's schedules must recur (%s); for a one-time run send a manual request", expr, syntax)}
	case strings.HasPrefix(expr, "rate("):
		return rateProblems(expr)
	case strings.HasPrefix(expr, "cron(") && strings.HasSuffix(expr, ")"):
		return cronProblems(expr)
	}
	return []string{fmt.Sprintf("%q is not an EventBridge Scheduler expression: %s", expr, syntax)}
}

func rateProblems(expr string) []string {
	m := rateRE.FindStringSubmatch(expr)
	if m == nil {
		return []string{fmt.Sprintf("%q is not a rate expression: use \"rate(N unit)\" with a positive whole number N and one space, e.g. \"rate(1 hour)\" or \"rate(12 hours)\"", expr)}
	}
	n, err := strconv.Atoi(m[1])
	unit := m[2]
	singular := strings.TrimSuffix(unit, "s")
	if singular != "minute" && singular != "hour" && singular != "day" {
		return []string{fmt.Sprintf("%q: unit %q is not allowed: use minute(s), hour(s) or day(s)", expr, unit)}
	}
	switch {
	case err != nil || n < 1 || m[1][0] == '0':
		return []string{fmt.Sprintf("%q: value %q must be a positive whole number without leading zeros", expr, m[1])}
	case n == 1 && unit != singular:
		return []string{fmt.Sprintf("%q: for a value of 1 the unit must be singular: \"rate(1 %s)\"", expr, singular)}
	case n > 1 && unit == singular:
		return []string{fmt.Sprintf("%q: for a value above 1 the unit must be plural: \"rate(%d %ss)\"", expr, n, singular)}
	}
	return nil
}

func cronProblems(expr string) []string {
	inner := strings.TrimSuffix(strings.TrimPrefix(expr, "cron("), ")")
	parts := strings.Split(inner, " ")
	if len(parts) != 6 || strings.Contains(inner, "  ") || strings.TrimSpace(inner) != inner {
		return []string{fmt.Sprintf("%q: a cron expression has six fields separated by single spaces: minutes hours day-of-month month day-of-week year, e.g. \"cron(0 3 * * ? *)\"", expr)}
	}
	var out []string
	for i, p := range parts {
		if msg := cronFieldProblem(i, p); msg != "" {
			out = append(out, fmt.Sprintf("%q: %s %q %s", expr, cronFields[i].name, p, msg))
		}
	}
	if (parts[fieldDayOfMonth] == "?") == (parts[fieldDayOfWeek] == "?") {
		out = append(out, fmt.Sprintf("%q: exactly one of day-of-month (3rd field) and day-of-week (5th field) must be '?', e.g. \"cron(0 3 * * ? *)\" (every day) or \"cron(0 3 ? * SUN *)\" (Sundays)", expr))
	}
	return out
}

// cronFieldProblem checks one field; "" means valid.
func cronFieldProblem(i int, p string) string {
	cf := cronFields[i]
	if p == "" {
		return "is empty"
	}
	if p == "?" {
		if i == fieldDayOfMonth || i == fieldDayOfWeek {
			return ""
		}
		return "is not allowed: '?' belongs only in day-of-month or day-of-week"
	}
	// Specials that stand alone: they cannot be part of a list or range.
	switch i {
	case fieldDayOfMonth:
		if p == "L" || p == "LW" {
			return ""
		}
		if d, ok := strings.CutSuffix(p, "W"); ok {
			// nW: the weekday nearest day n; a single day only.
			if _, err := cf.value(d); err != nil {
				return "is not allowed: 'W' follows a single day of the month 1-31, e.g. \"15W\" (or \"LW\", the last weekday)"
			}
			return ""
		}
		if strings.ContainsAny(p, "LW") {
			return "is not allowed: use 'L' (last day), 'LW' (last weekday) or 'nW' (weekday nearest day n) alone"
		}
	case fieldDayOfWeek:
		if p == "L" {
			return ""
		}
		if d, n, ok := strings.Cut(p, "#"); ok {
			// d#n: the n-th such day of the month; one expression only.
			k, err := strconv.Atoi(n)
			if _, derr := cf.value(d); derr != nil || err != nil || k < 1 || k > 5 || n[0] == '0' {
				return "is not allowed: '#' takes one day of the week and its occurrence 1-5, e.g. \"3#2\" (second Tuesday); \"3#1,6#3\" is two expressions and invalid"
			}
			return ""
		}
		if d, ok := strings.CutSuffix(p, "L"); ok {
			// dL: the last such day of the month.
			if _, err := cf.value(d); err != nil {
				return "is not allowed: 'L' stands alone (last day of the week) or follows one day, e.g. \"6L\" (last Friday)"
			}
			return ""
		}
	}
	for _, item := range strings.Split(p, ",") {
		if msg := cf.itemProblem(item); msg != "" {
			return msg
		}
	}
	return ""
}

// itemProblem checks one element of a list: *, n, n-m, each optionally
// followed by /step (n/step starts at n).
func (cf cronField) itemProblem(item string) string {
	rng, step, hasStep := strings.Cut(item, "/")
	if hasStep {
		k, err := strconv.Atoi(step)
		if err != nil || k < 1 || k > cf.max-cf.min+1 || step[0] == '0' {
			return fmt.Sprintf("has increment %q: use a whole number 1-%d after '/'", step, cf.max-cf.min+1)
		}
	}
	if rng == "*" {
		return ""
	}
	from, to, isRange := strings.Cut(rng, "-")
	lo, err := cf.value(from)
	if err != nil {
		return err.Error()
	}
	if isRange {
		hi, err := cf.value(to)
		if err != nil {
			return err.Error()
		}
		if hi < lo {
			return fmt.Sprintf("has range %q whose start is after its end: list the values instead", rng)
		}
	}
	return ""
}

// value parses a number (or a name) and checks its range.
func (cf cronField) value(s string) (int, error) {
	allowed := fmt.Sprintf("%d-%d", cf.min, cf.max)
	if len(cf.names) > 0 {
		allowed += fmt.Sprintf(" or %s-%s", cf.names[0], cf.names[len(cf.names)-1])
		for j, n := range cf.names {
			if strings.EqualFold(s, n) {
				return cf.min + j, nil
			}
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("is not valid: %q is not a value; allowed %s with , - * / and the field's specials", s, allowed)
	}
	if v < cf.min || v > cf.max {
		return 0, fmt.Errorf("is out of range: %d is not in %s", v, allowed)
	}
	return v, nil
}
