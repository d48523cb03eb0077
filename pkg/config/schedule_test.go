package config

import (
	"encoding/json"
	"strings"
	"testing"
)

// scheduleProblems validates a configuration whose one policy has schedule
// expression expr and returns the messages ("" when valid).
func scheduleProblems(expr string) string {
	b, _ := json.Marshal(expr)
	_, err := Parse([]byte(`{"policies":[{"name":"a","selector":{"tagKey":"B"},"schedule":{"expression":`+string(b)+`},"retention":{"daily":1}}]}`), "D")
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestScheduleExpressions (issue 11, item 6): expressions EventBridge
// Scheduler rejects fail validation with the field and the reason;
// expressions it documents as valid pass.
func TestScheduleExpressions(t *testing.T) {
	valid := []string{
		"cron(0 3 * * ? *)",
		"cron(15 10 ? * 6L 2022-2023)",      // last Friday of the month
		"cron(0 18 ? * MON-FRI *)",          // weekdays
		"cron(0 8 1 * ? *)",                 // first day of the month
		"cron(0/15 * * * ? *)",              // every 15 minutes
		"cron(0/10 * ? * MON-FRI *)",        //
		"cron(0/5 8-17 ? * MON-FRI *)",      //
		"cron(0 9 ? * 2#1 *)",               // first Monday
		"cron(0 3 L * ? *)",                 // last day of the month
		"cron(0 3 LW * ? *)",                // last weekday of the month
		"cron(0 3 15W * ? *)",               // weekday nearest the 15th
		"cron(0 3 ? * L *)",                 // last day of the week
		"cron(0 3 ? JAN,jul * 2199)",        // names in any case, last year
		"cron(59 23 31 DEC ? 1970)",         // upper and lower bounds
		"cron(0,30 1,13 1-15/2 1-12/3 ? *)", // lists, ranges, increments
		"cron(0 3 ? * SUN#5 *)",
		"rate(1 minute)", "rate(5 minutes)", "rate(1 hour)", "rate(12 hours)", "rate(1 day)", "rate(30 days)",
	}
	for _, e := range valid {
		if p := scheduleProblems(e); p != "" {
			t.Errorf("%s rejected: %v", e, p)
		}
	}
	invalid := []struct{ expr, want string }{
		{"cron(99 99 * * ? *)", `minutes (1st field) "99" is out of range`},
		{"cron(99 99 * * ? *)", `hours (2nd field) "99" is out of range`},
		{"cron(60 3 * * ? *)", "minutes (1st field)"},
		{"cron(0 24 * * ? *)", "hours (2nd field)"},
		{"cron(0 3 0 * ? *)", "day-of-month (3rd field)"},
		{"cron(0 3 32 * ? *)", "day-of-month (3rd field)"},
		{"cron(0 3 * 13 ? *)", "month (4th field)"},
		{"cron(0 3 * JANUARY ? *)", "month (4th field)"},
		{"cron(0 3 ? * 8 *)", "day-of-week (5th field)"},
		{"cron(0 3 ? * SUNDAY *)", "day-of-week (5th field)"},
		{"cron(0 3 ? * 0 *)", "day-of-week (5th field)"},
		{"cron(0 3 * * ? 1969)", "year (6th field)"},
		{"cron(0 3 * * ? 2200)", "year (6th field)"},
		{"cron(0 3 * * * *)", "exactly one of day-of-month"},
		{"cron(0 3 ? * ? *)", "exactly one of day-of-month"},
		{"cron(0 3 1 * MON *)", "exactly one of day-of-month"},
		{"cron(? 3 * * ? *)", "'?' belongs only in day-of-month or day-of-week"},
		{"cron(0 3 * * L *)", "exactly one of day-of-month"},
		{"cron(L 3 * * ? *)", "minutes (1st field)"},
		{"cron(0 3 * L ? *)", "month (4th field)"},
		{"cron(0 3 1,L * ? *)", "day-of-month (3rd field)"},
		{"cron(0 3 1-5W * ? *)", "'W' follows a single day"},
		{"cron(0 3 32W * ? *)", "'W' follows a single day"},
		{"cron(0 3 ? * 3#1,6#3 *)", "'#' takes one day"},
		{"cron(0 3 ? * 3#6 *)", "'#' takes one day"},
		{"cron(0 3 ? * 8#1 *)", "'#' takes one day"},
		{"cron(0 3 ? * 8L *)", "'L' stands alone"},
		{"cron(0 3 ? * # *)", "'#' takes one day"},
		{"cron(0 3 W * ? *)", "'W' follows a single day"},
		{"cron(0/0 3 * * ? *)", "increment"},
		{"cron(0/61 3 * * ? *)", "increment"},
		{"cron(10-5 3 * * ? *)", "start is after its end"},
		{"cron(-1 3 * * ? *)", "minutes (1st field)"},
		{"cron(+1 3 * * ? *)", "minutes (1st field)"},
		{"cron(1,,2 3 * * ? *)", "minutes (1st field)"},
		{"cron(0 3 * * ?)", "six fields"},
		{"cron(0 3 * * ? * *)", "six fields"},
		{"cron(0  3 * * ? *)", "six fields"},
		{"cron( 0 3 * * ? *)", "six fields"},
		{"cron(0 3 * * ? *", "not an EventBridge Scheduler expression"},
		{"0 3 * * *", "not an EventBridge Scheduler expression"},
		{"rate(1 hours)", `unit must be singular: "rate(1 hour)"`},
		{"rate(5 hour)", `unit must be plural: "rate(5 hours)"`},
		{"rate(1 days)", "singular"},
		{"rate(2 minute)", "plural"},
		{"rate(0 minutes)", "positive whole number"},
		{"rate(01 hour)", "positive whole number"},
		{"rate(1 week)", `unit "week" is not allowed`},
		{"rate(1 Hour)", "not a rate expression"},
		{"rate(1  hour)", "not a rate expression"},
		{"rate(-1 hour)", "not a rate expression"},
		{"rate(1.5 hours)", "not a rate expression"},
		{"rate(99999999999999999999 days)", "positive whole number"},
		{"at(2026-12-01T03:00:00)", "one-time schedule"},
		{"", "is required"},
		{"cron(" + strings.Repeat("0,", 130) + "0 3 * * ? *)", "at most 256"},
	}
	for _, tt := range invalid {
		p := scheduleProblems(tt.expr)
		if !strings.Contains(p, "config: policies[0].schedule.expression: ") || !strings.Contains(p, tt.want) {
			t.Errorf("%q: problems %q, want %q", tt.expr, p, tt.want)
		}
	}
}

// TestScheduleFieldPaths: each configured schedule reports its own field.
func TestScheduleFieldPaths(t *testing.T) {
	doc := `{"policies":[{"name":"a","selector":{"tagKey":"B"},"schedule":{"expression":"cron(99 99 * * ? *)"},"retention":{"daily":1}}],
	 "prune":{"schedule":{"expression":"rate(1 hours)"}},
	 "sharing":{"accountIds":["111111111111"],"sweep":{"expression":"at(2026-12-01T03:00:00)"}}}`
	_, err := Parse([]byte(doc), "D")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		`config: policies[0].schedule.expression: "cron(99 99 * * ? *)": minutes (1st field) "99" is out of range: 99 is not in 0-59`,
		`config: policies[0].schedule.expression: "cron(99 99 * * ? *)": hours (2nd field) "99" is out of range`,
		`config: prune.schedule.expression: "rate(1 hours)": for a value of 1 the unit must be singular`,
		`config: sharing.sweep.expression: "at(2026-12-01T03:00:00)" is a one-time schedule`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
	rec := `{"recovery":{"sourceAccountIds":["111111111111"],"sourceDeployment":"p","schedule":{"expression":"cron(0 3 ? * MON-SUNDAY *)"},"retention":{"last":1}}}`
	if _, err := Parse([]byte(rec), "D"); err == nil || !strings.Contains(err.Error(), "recovery.schedule.expression") {
		t.Errorf("recovery schedule: %v", err)
	}
}
