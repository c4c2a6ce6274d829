# Deploys rouse onto an existing Nomad + Consul cluster: the gateway and scaler jobs, the
# least-privilege ACLs they run with, and the Nomad Variables that hand them their Consul
# tokens.

locals {
  # nomad_job's hcl2 vars are strings, read like `nomad job run -var`: strings as they
  # are, other types as HCL expressions (hence jsonencode for lists).
  common_vars = {
    namespace      = var.namespace
    region         = var.region
    datacenters    = jsonencode(var.datacenters)
    driver         = var.driver
    image          = var.image
    rouse_binary   = var.rouse_binary
    consul_address = var.consul_address
    log_level      = var.log_level
  }

  gateway_vars = merge(local.common_vars, {
    job_name    = var.gateway_job_name
    mode        = var.gateway_mode
    instances   = tostring(var.gateway_count)
    node_class  = var.gateway_node_class
    public_port = tostring(var.gateway_public_port)
    domain      = var.domain
    cpu         = tostring(var.gateway_resources.cpu)
    memory      = tostring(var.gateway_resources.memory)
  })

  scaler_vars = merge(local.common_vars, {
    job_name      = var.scaler_job_name
    instances     = tostring(var.scaler_count)
    node_class    = var.scaler_node_class
    namespaces    = jsonencode(var.managed_namespaces)
    nomad_address = var.nomad_address
    cpu           = tostring(var.scaler_resources.cpu)
    memory        = tostring(var.scaler_resources.memory)
  })
}

# --- Consul: one policy and token per daemon ------------------------------------------

resource "consul_acl_policy" "gateway" {
  count       = var.consul_acl_enabled ? 1 : 0
  name        = var.gateway_job_name
  description = "rouse gateway: read routes and instance health, register rouse-gateway"
  rules       = file("${path.module}/policies/gateway.consul.hcl")
}

resource "consul_acl_token" "gateway" {
  count       = var.consul_acl_enabled ? 1 : 0
  description = "rouse gateway (Nomad job ${var.namespace}/${var.gateway_job_name})"
  policies    = [consul_acl_policy.gateway[0].name]
}

data "consul_acl_token_secret_id" "gateway" {
  count       = var.consul_acl_enabled ? 1 : 0
  accessor_id = consul_acl_token.gateway[0].accessor_id
}

resource "consul_acl_policy" "scaler" {
  count       = var.consul_acl_enabled ? 1 : 0
  name        = var.scaler_job_name
  description = "rouse scaler: leader lock, read revision configs, find gateways"
  rules       = file("${path.module}/policies/scaler.consul.hcl")
}

resource "consul_acl_token" "scaler" {
  count       = var.consul_acl_enabled ? 1 : 0
  description = "rouse scaler (Nomad job ${var.namespace}/${var.scaler_job_name})"
  policies    = [consul_acl_policy.scaler[0].name]
}

data "consul_acl_token_secret_id" "scaler" {
  count       = var.consul_acl_enabled ? 1 : 0
  accessor_id = consul_acl_token.scaler[0].accessor_id
}

# --- Nomad: the scaler's rights, attached to its job's workload identity ---------------
# No Nomad token is minted: Nomad signs an identity for each scaler task, and this policy
# applies to exactly that job.

resource "nomad_acl_policy" "scaler" {
  count       = var.nomad_acl_enabled ? 1 : 0
  name        = var.scaler_job_name
  description = "rouse scaler: list, read and scale revision jobs in ${join(", ", var.managed_namespaces)}"
  rules_hcl   = templatefile("${path.module}/policies/scaler.nomad.hcl.tftpl", { namespaces = var.managed_namespaces })

  job_acl {
    namespace = var.namespace
    job_id    = var.scaler_job_name
  }
}

# Each job reads nomad/jobs/<job ID> with its own workload identity and nothing else can
# (beyond Nomad operators), so the Consul secrets stay out of the jobspec.
resource "nomad_variable" "gateway" {
  namespace = var.namespace
  path      = "nomad/jobs/${var.gateway_job_name}"
  items = {
    consul_token = var.consul_acl_enabled ? data.consul_acl_token_secret_id.gateway[0].secret_id : ""
  }
}

resource "nomad_variable" "scaler" {
  namespace = var.namespace
  path      = "nomad/jobs/${var.scaler_job_name}"
  items = {
    consul_token = var.consul_acl_enabled ? data.consul_acl_token_secret_id.scaler[0].secret_id : ""
  }
}

# --- The jobs --------------------------------------------------------------------------

resource "nomad_job" "gateway" {
  jobspec          = file("${path.module}/gateway.nomad.hcl")
  purge_on_destroy = true

  hcl2 {
    vars = local.gateway_vars
  }

  # The token must be readable before the first task renders its template.
  depends_on = [nomad_variable.gateway]
}

resource "nomad_job" "scaler" {
  jobspec          = file("${path.module}/scaler.nomad.hcl")
  purge_on_destroy = true

  hcl2 {
    vars = local.scaler_vars
  }

  depends_on = [nomad_variable.scaler, nomad_acl_policy.scaler]
}
