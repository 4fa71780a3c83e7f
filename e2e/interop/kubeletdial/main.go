// kubeletdial calls the plugin's sockets the way the kubelet does, with grpc-go and the kubelet's
// own generated API packages (k8s.io/kubelet): registration is dialled as in
// pkg/kubelet/pluginmanager/operationexecutor/operation_generator.go (func dial: the socket path as
// target, a unix context dialer, no authority), the DRA socket as in
// pkg/kubelet/cm/dra/plugin (grpc.Dial of the endpoint path with a unix context dialer).
// It prints one JSON object and exits 1 if a check failed. Test tooling only (e2e/interop).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	drahealthv1alpha1 "k8s.io/kubelet/pkg/apis/dra-health/v1alpha1"
	drav1 "k8s.io/kubelet/pkg/apis/dra/v1"
	drav1beta1 "k8s.io/kubelet/pkg/apis/dra/v1beta1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

type result struct {
	Check  string `json:"check"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func unixDialer(ctx context.Context, addr string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "unix", addr)
}

func main() {
	reg := flag.String("registration", "", "registration socket")
	dra := flag.String("dra", "", "DRA socket")
	uid := flag.String("claim-uid", "", "UID of a claim the API server does not have")
	driver := flag.String("driver", "multinic.dev", "driver name")
	flag.Parse()

	var results []result
	failed := false
	check := func(name string, ok bool, detail string) {
		results = append(results, result{name, ok, detail})
		if !ok {
			failed = true
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	//nolint:staticcheck // the kubelet's own dial options, on purpose
	conn, err := grpc.DialContext(ctx, *reg, grpc.WithInsecure(), grpc.WithBlock(), grpc.WithContextDialer(unixDialer))
	if err != nil {
		check("dial registration", false, err.Error())
	} else {
		client := registerapi.NewRegistrationClient(conn)
		info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
		if err != nil {
			check("GetInfo", false, err.Error())
		} else {
			want := []string{"v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"}
			ok := info.Type == "DRAPlugin" && info.Name == *driver && info.Endpoint == *dra &&
				fmt.Sprint(info.SupportedVersions) == fmt.Sprint(want)
			check("GetInfo", ok, fmt.Sprintf("%s %s %s %v", info.Type, info.Name, info.Endpoint, info.SupportedVersions))
		}
		_, err = client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true})
		check("NotifyRegistrationStatus", err == nil, fmt.Sprint(err))
		conn.Close()
	}

	//nolint:staticcheck // as the kubelet's DRA plugin client dials
	dconn, err := grpc.Dial(*dra, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(unixDialer))
	if err != nil {
		check("dial DRA", false, err.Error())
	} else {
		v1 := drav1.NewDRAPluginClient(dconn)
		resp, err := v1.NodePrepareResources(ctx, &drav1.NodePrepareResourcesRequest{
			Claims: []*drav1.Claim{{Namespace: "default", Uid: *uid, Name: "no-such-claim"}}})
		if err != nil {
			check("NodePrepareResources v1", false, err.Error())
		} else {
			r := resp.Claims[*uid]
			check("NodePrepareResources v1", r != nil && r.Error != "" && len(resp.Claims) == 1, fmt.Sprint(r))
		}
		beta := drav1beta1.NewDRAPluginClient(dconn)
		uresp, err := beta.NodeUnprepareResources(ctx, &drav1beta1.NodeUnprepareResourcesRequest{
			Claims: []*drav1beta1.Claim{{Namespace: "default", Uid: *uid, Name: "no-such-claim"}}})
		if err != nil {
			check("NodeUnprepareResources v1beta1", false, err.Error())
		} else {
			r := uresp.Claims[*uid]
			check("NodeUnprepareResources v1beta1", r != nil && r.Error == "", fmt.Sprint(r))
		}
		// The health stream as pkg/kubelet/cm/dra/plugin (DRAPlugin.NodeWatchResources) opens it:
		// v1alpha1, on the DRA connection; the first message lists the pool's devices at once.
		stream, err := drahealthv1alpha1.NewDRAResourceHealthClient(dconn).NodeWatchResources(ctx, &drahealthv1alpha1.NodeWatchResourcesRequest{})
		if err != nil {
			check("NodeWatchResources v1alpha1", false, err.Error())
		} else if first, err := stream.Recv(); err != nil {
			check("NodeWatchResources v1alpha1", false, err.Error())
		} else {
			ok := true
			for _, d := range first.Devices {
				ok = ok && d.GetDevice().GetPoolName() != "" && d.GetDevice().GetDeviceName() != "" &&
					d.GetHealthCheckTimeoutSeconds() == 30 && d.GetLastUpdatedTime() > 0
			}
			check("NodeWatchResources v1alpha1", ok, fmt.Sprintf("%d devices: %v", len(first.Devices), first.Devices))
		}
		dconn.Close()
	}

	out := map[string]any{"results": results, "failed": failed}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	_ = enc.Encode(out)
	if failed {
		os.Exit(1)
	}
}
