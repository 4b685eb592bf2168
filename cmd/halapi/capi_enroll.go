package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/halapi/halapi/capi"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// capiEnrollCmd is `capi enroll KEY`: what `cscli console enroll` does,
// sent by the leader with the cluster's CAPI credentials.
func capiEnrollCmd(o *adminOpts) *cobra.Command {
	var name string
	var tags []string
	var overwrite bool
	c := &cobra.Command{
		Use:   "enroll KEY",
		Short: "Enroll the cluster in the CrowdSec console (sent by the leader with the cluster's CAPI credentials)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.checkOutput(); err != nil {
				return err
			}
			var out capi.EnrollResponse
			req := capi.EnrollRequest{Key: args[0], Name: name, Tags: tags, Overwrite: overwrite}
			if err := o.call("POST", "/capi/enroll", nil, req, &out); err != nil {
				return err
			}
			if o.output == "json" {
				return printJSON(out)
			}
			fmt.Println(out.Message)
			if out.Enrollment != nil && out.Enrollment.Result == "enrolled" {
				fmt.Println("Once accepted, `halapi capi status` shows the enrollment (no restart needed).")
			}
			return nil
		},
	}
	c.Flags().StringVarP(&name, "name", "n", "", "name to display in the console")
	c.Flags().StringSliceVarP(&tags, "tags", "t", nil, "tags to display in the console")
	c.Flags().BoolVar(&overwrite, "overwrite", false, "force enroll the instance")
	return c
}

// capiCredentialsCmd is `capi credentials -o FILE`: the cluster's CAPI
// credentials as CrowdSec's online_api_credentials.yaml. Here -o names
// the file (- or no -o: standard output).
func capiCredentialsCmd(o *adminOpts) *cobra.Command {
	return &cobra.Command{
		Use:   "credentials [-o FILE]",
		Short: "Write the cluster's CAPI credentials as CrowdSec's online_api_credentials.yaml (-o FILE, default stdout)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			var cf capi.CredentialsFile
			if err := o.call("GET", "/capi/credentials", nil, nil, &cf); err != nil {
				return err
			}
			b, err := yaml.Marshal(cf)
			if err != nil {
				return err
			}
			switch file := o.output; file {
			case "", "-", "human":
				_, err := os.Stdout.Write(b)
				return err
			case "json", "raw":
				return fmt.Errorf("-o names the file to write for this command (got %q)", file)
			default:
				if err := writeSecretFile(file, b); err != nil {
					return err
				}
				fmt.Fprintf(os.Stderr, "CAPI credentials (login %s) written to %s\n", cf.Login, file)
				return nil
			}
		},
	}
}

func printEnrollment(line func(k, v string), st capi.StatusView) {
	e := st.Enrollment
	switch {
	case st.EnrollPending:
		line("Console enrollment", "requested, waiting for the leader")
	case e == nil:
		return
	default:
		v := e.Result
		if e.At != nil {
			v += " at " + fmtOptTime(e.At)
		}
		if e.Name != "" {
			v += ", name " + e.Name
		}
		if len(e.Tags) > 0 {
			v += ", tags " + strings.Join(e.Tags, ",")
		}
		if e.Result == "failed" {
			v += ": " + e.Message
		} else if e.Result == "enrolled" && !st.Enrolled {
			v += " (accept it in the console)"
		}
		line("Console enrollment", v)
	}
}
