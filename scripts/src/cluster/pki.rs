//! The cluster's PKI: one CA, the API server's serving certificate, the
//! admin client certificate every component and test uses, the
//! service-account signing key, and the real node's certificates (the
//! kubelet's serving and client certificates, and the client certificate the
//! API server presents to the kubelet for logs and exec). Written once; an
//! existing CA and service-account key are kept, so restarts keep every
//! issued token valid, and a certificate added later is issued by that CA.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::network::{HOST_IP, REAL_NODE_IP};
use super::real_node::NODE_NAME;

pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn apiserver_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn apiserver_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
    pub fn service_account_pub(&self) -> PathBuf {
        self.dir.join("sa.pub")
    }
    /// The kubelet's serving certificate (for the API server's logs/exec).
    pub fn kubelet_cert(&self) -> PathBuf {
        self.dir.join("kubelet.crt")
    }
    pub fn kubelet_key(&self) -> PathBuf {
        self.dir.join("kubelet.key")
    }
    /// The kubelet's identity towards the API server (`system:node:…`).
    pub fn kubelet_client_cert(&self) -> PathBuf {
        self.dir.join("kubelet-client.crt")
    }
    pub fn kubelet_client_key(&self) -> PathBuf {
        self.dir.join("kubelet-client.key")
    }
    /// The API server's identity towards the kubelet.
    pub fn apiserver_kubelet_client_cert(&self) -> PathBuf {
        self.dir.join("apiserver-kubelet-client.crt")
    }
    pub fn apiserver_kubelet_client_key(&self) -> PathBuf {
        self.dir.join("apiserver-kubelet-client.key")
    }

    /// Write what is missing: a new CA (and with it every certificate)
    /// when there is none, else only the certificates not issued yet.
    pub fn ensure(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let issuer = if self.ca_cert().exists() && self.ca_key().exists() {
            // The same parameters and key make the same issuer name and key
            // identifier as the certificate on disk.
            let key = KeyPair::from_pem(&std::fs::read_to_string(self.ca_key())?)?;
            Issuer::new(ca_params(CA_NAME)?, key)
        } else {
            let ca_key = KeyPair::generate()?;
            let ca = ca_params(CA_NAME)?;
            let ca_cert = ca.self_signed(&ca_key)?;
            for path in self.leaf_files() {
                let _ = std::fs::remove_file(path);
            }
            write(&self.ca_cert(), &ca_cert.pem())?;
            write(&self.ca_key(), &ca_key.serialize_pem())?;
            Issuer::new(ca, ca_key)
        };
        for (cert, key, params) in self.leaves()? {
            if !(cert.exists() && key.exists()) {
                self.issue(&params, &issuer, &cert, &key)?;
            }
        }
        if !(self.service_account_key().exists() && self.service_account_pub().exists()) {
            let sa_key = KeyPair::generate()?;
            write(&self.service_account_key(), &sa_key.serialize_pem())?;
            write(&self.service_account_pub(), &sa_key.public_key_pem())?;
        }
        Ok(())
    }

    fn leaf_files(&self) -> Vec<PathBuf> {
        [
            self.apiserver_cert(),
            self.apiserver_key(),
            self.admin_cert(),
            self.admin_key(),
            self.kubelet_cert(),
            self.kubelet_key(),
            self.kubelet_client_cert(),
            self.kubelet_client_key(),
            self.apiserver_kubelet_client_cert(),
            self.apiserver_kubelet_client_key(),
        ]
        .to_vec()
    }

    /// Every certificate the CA issues: (certificate, key, parameters).
    fn leaves(&self) -> anyhow::Result<Vec<(PathBuf, PathBuf, CertificateParams)>> {
        let mut serving = leaf("kube-apiserver", None, ExtendedKeyUsagePurpose::ServerAuth)?;
        serving.subject_alt_names = [
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ]
        .into_iter()
        .map(|name| Ok(SanType::DnsName(name.try_into()?)))
        .chain(
            [
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::V4(HOST_IP),
                super::components::SERVICE_IP_KUBERNETES,
            ]
            .map(|ip| Ok(SanType::IpAddress(ip))),
        )
        .collect::<Result<_, rcgen::Error>>()?;
        let admin = leaf(
            "kubernetes-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let node_user = format!("system:node:{NODE_NAME}");
        let mut kubelet = leaf(&node_user, None, ExtendedKeyUsagePurpose::ServerAuth)?;
        kubelet.subject_alt_names = vec![
            SanType::DnsName(NODE_NAME.try_into()?),
            SanType::IpAddress(IpAddr::V4(REAL_NODE_IP)),
        ];
        let kubelet_client = leaf(
            &node_user,
            Some("system:nodes"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let apiserver_kubelet_client = leaf(
            APISERVER_KUBELET_CLIENT,
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(vec![
            (self.apiserver_cert(), self.apiserver_key(), serving),
            (self.admin_cert(), self.admin_key(), admin),
            (self.kubelet_cert(), self.kubelet_key(), kubelet),
            (
                self.kubelet_client_cert(),
                self.kubelet_client_key(),
                kubelet_client,
            ),
            (
                self.apiserver_kubelet_client_cert(),
                self.apiserver_kubelet_client_key(),
                apiserver_kubelet_client,
            ),
        ])
    }

    fn issue(
        &self,
        params: &CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
        cert_path: &Path,
        key_path: &Path,
    ) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, issuer)?;
        write(cert_path, &cert.pem())?;
        write(key_path, &key.serialize_pem())
    }
}

const CA_NAME: &str = "views-gateway local cluster CA";

/// The user the API server is to the kubelet (bound to
/// `system:kubelet-api-admin`, as kubeadm does).
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// A CA's parameters: the same name and key make the same issuer again.
pub(crate) fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, common_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(ca)
}

pub(crate) fn leaf(
    common_name: &str,
    organization: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(organization) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, organization);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Write a file only its owner may read (keys among them).
pub(crate) fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut file, contents.as_bytes())?;
    Ok(())
}
