// Command kube is a multi-call binary holding the Kubernetes components that
// the local cluster runs: the control plane of the kwok cluster image
// v0.7.0-k8s.v1.33.0, a matching kubectl, and the kubelet and kube-proxy of
// its real node (CoreDNS is a module of its own in ./coredns: no CoreDNS
// release builds against client-go v0.33). Linking them into one binary saves several minutes of link time
// and a few hundred megabytes over separate builds.
//
// The component is chosen by the name the binary is invoked as (the harness
// creates one symlink per component), or by the first argument:
//
//	kube etcd --data-dir=...
//	kube-apiserver --etcd-servers=...   (through a symlink)
package main

import (
	goflag "flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.etcd.io/etcd/server/v3/etcdmain"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	_ "k8s.io/component-base/metrics/prometheus/workqueue"
	kubectl "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
	kwokconfig "sigs.k8s.io/kwok/pkg/config"
	kwok "sigs.k8s.io/kwok/pkg/kwok/cmd"
	kwoklog "sigs.k8s.io/kwok/pkg/log"
	"sigs.k8s.io/kwok/pkg/utils/signals"
)

var components = map[string]func(args []string) int{
	"etcd": func(args []string) int {
		etcdmain.Main(append([]string{"etcd"}, args...))
		return 0
	},
	"kube-apiserver":          cobraMain(apiserver.NewAPIServerCommand),
	"kube-controller-manager": cobraMain(controllermanager.NewControllerManagerCommand),
	"kube-scheduler": cobraMain(func() *cobra.Command {
		return scheduler.NewSchedulerCommand()
	}),
	"kubectl": func(args []string) int {
		command := kubectl.NewDefaultKubectlCommand()
		command.SetArgs(args)
		if err := cli.RunNoErrOutput(command); err != nil {
			kubectlutil.CheckErr(err) // prints kubectl's own error format and exits
		}
		return 0
	},
	"kwok":       kwokMain,
	"kubelet":    cobraMain(kubelet.NewKubeletCommand),
	"kube-proxy": cobraMain(proxy.NewProxyCommand),
}

func cobraMain(newCommand func() *cobra.Command) func([]string) int {
	return func(args []string) int {
		command := newCommand()
		command.SetArgs(args)
		return cli.Run(command)
	}
}

// kwokMain mirrors sigs.k8s.io/kwok/cmd/kwok: global flags (config files,
// logging) are parsed before the command is built.
func kwokMain(args []string) int {
	// The Kubernetes packages linked into this binary register global flags
	// (a non-boolean --version among them) that would clash with kwok's own.
	goflag.CommandLine = goflag.NewFlagSet("kwok", goflag.ExitOnError)
	pflag.CommandLine = pflag.NewFlagSet("kwok", pflag.ExitOnError)

	flagset := pflag.NewFlagSet("global", pflag.ContinueOnError)
	flagset.ParseErrorsWhitelist.UnknownFlags = true
	flagset.Usage = func() {}
	os.Args = append([]string{"kwok"}, args...)

	ctx := signals.SetupSignalContext()
	ctx, logger := kwoklog.InitFlags(ctx, flagset)
	ctx, err := kwokconfig.InitFlags(ctx, flagset)
	if err != nil {
		logger.Error("Init config flags", err)
		return 1
	}
	command := kwok.NewCommand(ctx)
	command.PersistentFlags().AddFlagSet(flagset)
	command.SetArgs(args)
	if err := command.ExecuteContext(ctx); err != nil {
		logger.Error("Execute exit", err)
		return 1
	}
	return 0
}

func main() {
	name, args := filepath.Base(os.Args[0]), os.Args[1:]
	if _, ok := components[name]; !ok && len(args) > 0 {
		name, args = args[0], args[1:]
	}
	run, ok := components[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "usage: kube <component> [flags]; components: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kubelet kube-proxy\n")
		os.Exit(2)
	}
	os.Exit(run(args))
}
