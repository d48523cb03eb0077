package stacks

import (
	"github.com/aws/aws-cdk-go/awscdk/v2/awscloudwatch"
	"github.com/aws/constructs-go/constructs/v10"
	"github.com/aws/jsii-runtime-go"

	"github.com/amibackup/amibackup/pkg/config"
	"github.com/amibackup/amibackup/pkg/metrics"
)

func graph(title string, m ...awscloudwatch.IMetric) awscloudwatch.IWidget {
	return awscloudwatch.NewGraphWidget(&awscloudwatch.GraphWidgetProps{Title: jsii.String(title), Left: &m, Width: jsii.Number(12)})
}

// newDashboard adds the deployment's dashboard: the stack's own rows, then
// what every stack has: prune results and each function's runs and errors
// (fns in the order they are charted).
func newDashboard(scope constructs.Construct, cfg *config.Config, fns []*AmiFunction, rows ...[]awscloudwatch.IWidget) awscloudwatch.Dashboard {
	d := awscloudwatch.NewDashboard(scope, jsii.String("Dashboard"), &awscloudwatch.DashboardProps{
		DashboardName: jsii.String(deploymentName(cfg.Deployment, maxDashboardName)),
	})
	for _, r := range rows {
		d.AddWidgets(r...)
	}
	var runs []awscloudwatch.IMetric
	for _, fn := range fns {
		runs = append(runs, fn.MetricInvocations(&awscloudwatch.MetricOptions{Period: daily()}), fn.MetricErrors(&awscloudwatch.MetricOptions{Period: daily()}))
	}
	d.AddWidgets(graph("Images pruned", metric(metrics.ImagesPruned, metrics.AllPolicies, "Sum", daily()), metric(metrics.OrphanSnapshotsDeleted, metrics.AllPolicies, "Sum", daily())),
		graph("Function runs and errors", runs...))
	return d
}
