// Command deploycheck runs the Kubernetes parts of deploy/check.sh that need Go libraries,
// offline (the compose files are checked by `docker compose config` itself, built from
// deploy/tools/compose):
//
//	deploycheck kustomize -native OUT -crd OUT DIR
//	    renders DIR with kustomize (krusty, the library behind `kubectl kustomize`) and writes
//	    the built-in kinds to -native (for kubernetes-validate) and the custom resources to -crd.
//	deploycheck servicemonitor FILE...
//	    decodes every ServiceMonitor in FILE strictly into the prometheus-operator's Go type
//	    (an unknown or mistyped field is an error) and checks what the operator needs.
//
// It never talks to a Docker engine or a cluster.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: deploycheck kustomize|servicemonitor ..."))
	}
	var err error
	switch os.Args[1] {
	case "kustomize":
		err = kustomize(os.Args[2:])
	case "servicemonitor":
		err = serviceMonitors(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "deploycheck:", err)
	os.Exit(1)
}

func kustomize(args []string) error {
	fs := flag.NewFlagSet("kustomize", flag.ContinueOnError)
	nativeOut := fs.String("native", "", "file for the built-in kinds")
	crdOut := fs.String("crd", "", "file for the custom resources")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || *nativeOut == "" || *crdOut == "" {
		return errors.New("usage: deploycheck kustomize -native OUT -crd OUT DIR")
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resources, err := k.Run(filesys.MakeFsOnDisk(), fs.Arg(0))
	if err != nil {
		return err
	}
	var native, crd bytes.Buffer
	for _, r := range resources.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			return err
		}
		out := &native
		if !builtIn(r.GetApiVersion()) {
			out = &crd
		}
		out.WriteString("---\n")
		out.Write(doc)
		fmt.Printf("%s %s/%s\n", fs.Arg(0), r.GetKind(), r.GetName())
	}
	if err := os.WriteFile(*nativeOut, native.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(*crdOut, crd.Bytes(), 0o644)
}

// builtIn tells the API groups the Kubernetes OpenAPI schema covers from custom resources.
func builtIn(apiVersion string) bool {
	group, _, found := strings.Cut(apiVersion, "/")
	if !found {
		return true // the core group: v1
	}
	return !strings.Contains(group, ".") || strings.HasSuffix(group, ".k8s.io")
}

func serviceMonitors(files []string) error {
	checked := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(data, []byte("\n---")) {
			var head struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &head); err != nil {
				return fmt.Errorf("%s: document %d: %w", file, i, err)
			}
			if head.Kind != "ServiceMonitor" {
				continue
			}
			if head.APIVersion != "monitoring.coreos.com/v1" {
				return fmt.Errorf("%s: ServiceMonitor of apiVersion %q", file, head.APIVersion)
			}
			var sm monitoringv1.ServiceMonitor
			if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
				return fmt.Errorf("%s: document %d: %w", file, i, err)
			}
			if err := checkServiceMonitor(&sm); err != nil {
				return fmt.Errorf("%s: ServiceMonitor %s: %w", file, sm.Name, err)
			}
			fmt.Printf("%s: ServiceMonitor %s/%s: ok\n", file, sm.Namespace, sm.Name)
			checked++
		}
	}
	if checked == 0 {
		return errors.New("no ServiceMonitor found")
	}
	return nil
}

// checkServiceMonitor checks what the CRD's schema requires and what an operator needs to
// find a target at all.
func checkServiceMonitor(sm *monitoringv1.ServiceMonitor) error {
	if sm.Name == "" {
		return errors.New("metadata.name is empty")
	}
	if len(sm.Spec.Selector.MatchLabels) == 0 && len(sm.Spec.Selector.MatchExpressions) == 0 {
		return errors.New("spec.selector selects every Service: name the labels")
	}
	if len(sm.Spec.Endpoints) == 0 {
		return errors.New("spec.endpoints is empty")
	}
	for i, e := range sm.Spec.Endpoints {
		if e.Port == "" && e.TargetPort == nil {
			return fmt.Errorf("spec.endpoints[%d] names neither port nor targetPort", i)
		}
	}
	return nil
}
