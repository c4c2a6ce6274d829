# rouse scaler: reads the gateways' concurrency gauges and sets each revision's count in
# Nomad. Several replicas run; one holds the Consul lock on rouse/scaler/leader and acts,
# the others wait to take over.
#
# One copy serves every runner: the terraform module renders it with nomad_job's
# hcl2 { vars = {...} }, the module's Go test registers it on a real Nomad agent, and
# `nomad job run -var driver=raw_exec ...` works by hand.

variable "job_name" {
  description = "Nomad job ID."
  type        = string
  default     = "rouse-scaler"
}

variable "namespace" {
  description = "Nomad namespace the scaler job runs in."
  type        = string
  default     = "default"
}

variable "region" {
  description = "Nomad region."
  type        = string
  default     = "global"
}

variable "datacenters" {
  description = "Datacenters to place the scalers in."
  type        = list(string)
  default     = ["*"]
}

variable "instances" {
  description = "Scaler replicas; one leads, the rest stand by."
  type        = number
  default     = 2

  validation {
    condition     = var.instances >= 2
    error_message = "Run at least 2 scalers, so losing a node does not stop autoscaling."
  }
}

variable "namespaces" {
  description = "Nomad namespaces whose revisions this scaler scales (its ACL policy must allow them)."
  type        = list(string)
  default     = ["default"]

  validation {
    condition     = length(var.namespaces) > 0
    error_message = "List at least one namespace."
  }
}

variable "node_class" {
  description = "Only nodes of this node class run a scaler; \"\" = any node."
  type        = string
  default     = ""
}

variable "driver" {
  description = "\"docker\" runs `image`; \"raw_exec\" runs the binary at `rouse_binary` (tests, bare hosts)."
  type        = string
  default     = "docker"

  validation {
    condition     = contains(["docker", "raw_exec"], var.driver)
    error_message = "The driver must be \"docker\" or \"raw_exec\"."
  }
}

variable "image" {
  description = "Container image holding the rouse binary (driver = \"docker\")."
  type        = string
  default     = ""
}

variable "rouse_binary" {
  description = "Path of the rouse binary on the client (driver = \"raw_exec\")."
  type        = string
  default     = "/usr/local/bin/rouse"
}

variable "consul_address" {
  description = "Consul HTTP API as host:port, reached from the node (every client runs an agent)."
  type        = string
  default     = "127.0.0.1:8500"
}

variable "nomad_address" {
  description = "Nomad HTTP API for the scaler; \"\" = the Task API socket in the task's secrets dir."
  type        = string
  default     = ""
}

variable "log_level" {
  description = "debug, info, warn or error."
  type        = string
  default     = "info"
}

variable "cpu" {
  description = "CPU reservation in MHz."
  type        = number
  default     = 200
}

variable "memory" {
  description = "Memory reservation in MiB."
  type        = number
  default     = 128
}

locals {
  args = [
    "scaler",
    "--admin-listen", "$${NOMAD_ADDR_admin}",
    "--namespaces", join(",", var.namespaces),
    # The allocation ID, not the default hostname-pid: two replicas in containers on one
    # host would share that, and with it their Consul registration.
    "--id", "$${NOMAD_ALLOC_ID}",
    "--log-level", var.log_level,
  ]
}

job "rouse-scaler" {
  id          = var.job_name
  name        = var.job_name
  namespace   = var.namespace
  region      = var.region
  datacenters = var.datacenters
  type        = "service"

  dynamic "constraint" {
    for_each = var.node_class == "" ? [] : [var.node_class]
    content {
      attribute = "$${node.class}"
      value     = constraint.value
    }
  }

  update {
    max_parallel = 1
    # The scaler registers itself in Consul (service rouse-scaler, with the TTL check its
    # leader session hangs on), so Nomad judges health by the task staying up.
    health_check     = "task_states"
    min_healthy_time = "10s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "scaler" {
    count = var.instances

    # Prefer different nodes, but still run every replica on a one-node cluster.
    spread {
      attribute = "$${node.unique.id}"
    }

    # /metrics, /healthz and /decisions; the scaler advertises it in Consul itself.
    network {
      port "admin" {}
    }

    restart {
      attempts = 5
      interval = "1m"
      delay    = "2s"
      mode     = "delay"
    }

    task "scaler" {
      driver = var.driver

      # Exactly one config block survives, picked by the driver.
      dynamic "config" {
        for_each = var.driver == "docker" ? [var.image] : []
        content {
          image        = config.value
          network_mode = "host"
          args         = local.args
        }
      }
      dynamic "config" {
        for_each = var.driver == "raw_exec" ? [var.rouse_binary] : []
        content {
          command = config.value
          args    = local.args
        }
      }

      # The scaler authenticates to Nomad with its workload identity (NOMAD_TOKEN), so no
      # Nomad token exists to leak: what it may do is the ACL policy attached to this job
      # (nomad_acl_policy.scaler, job_acl). By default it talks to the Task API socket,
      # which needs no address and no TLS material.
      identity {
        env = true
      }

      env {
        NOMAD_ADDR       = var.nomad_address != "" ? var.nomad_address : "unix://$${NOMAD_SECRETS_DIR}/api.sock"
        CONSUL_HTTP_ADDR = var.consul_address
      }

      # The Consul token lives in a Nomad Variable the job alone can read (workload
      # identity), never in the jobspec, which anyone with read-job can see.
      template {
        data        = "{{ with nomadVar \"nomad/jobs/${var.job_name}\" }}CONSUL_HTTP_TOKEN={{ .consul_token }}{{ end }}\n"
        destination = "secrets/consul.env"
        env         = true
      }

      # A stopping leader releases the lock at once, so a standby takes over within a tick.
      kill_timeout = "10s"

      resources {
        cpu    = var.cpu
        memory = var.memory
      }
    }
  }
}
