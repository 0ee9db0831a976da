// Command coredns is the cluster DNS of the local cluster's real node:
// CoreDNS v1.12.1 with only the plugins a cluster DNS needs.
//
// It is a module of its own rather than part of the multi-call binary in
// ../: no CoreDNS release builds against client-go v0.33 (v1.12 needs
// v0.32's informer config, v1.12.4 and later need v0.34).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	// The plugins above, in the order of CoreDNS's own plugin.cfg.
	dnsserver.Directives = []string{"bind", "ready", "health", "errors", "kubernetes"}
	coremain.Run()
}
