//! The model's parameters under their Hugging Face names (`model.layers.3.mlp.up_proj.weight`),
//! found by walking the module tree (struct fields are named as the checkpoint keys), with what
//! it takes to move between burn's layout and HF's: saving, optimiser state keyed by name, and
//! gradients reported by name all use this one walk.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Gradients, Tensor};

/// One parameter.
#[derive(Debug, Clone)]
pub struct NamedParam {
    /// The HF checkpoint key.
    pub name: String,
    /// burn's id of the parameter (stable while the model is in memory; not across loads).
    pub id: ParamId,
    /// The parameter flattened (a handle to the same data, not a copy).
    pub flat: Tensor<1>,
    /// Its shape in burn's layout.
    pub shape: Vec<usize>,
    /// Whether burn stores it transposed relative to HF: a `Linear` weight is `[in, out]` in
    /// burn and `[out, in]` in HF.
    pub transposed: bool,
    /// Its gradient, flattened, when the walk was given [`Gradients`] that hold one
    /// ([`named_grads`]).
    pub grad: Option<Tensor<1>>,
    /// Whether autodiff tracks it (false for every parameter of an inference view, and for the
    /// frozen base weights of a LoRA model).
    pub trainable: bool,
}

impl NamedParam {
    /// The shape in HF's layout.
    pub fn hf_shape(&self) -> Vec<usize> {
        let mut shape = self.shape.clone();
        if self.transposed {
            shape.reverse();
        }
        shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Every float parameter of `module`, in module order, named by its field path.
pub fn named_params<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut walk = Walk {
        path: Vec::new(),
        out: Vec::new(),
        grads: None,
    };
    module.visit(&mut walk);
    walk.out
}

/// [`named_params`] with each parameter's gradient from `grads` ([`NamedParam::grad`], `None`
/// for a parameter the loss does not depend on or that is not tracked).
pub fn named_grads<M: Module>(module: &M, grads: &Gradients) -> Vec<NamedParam> {
    let mut walk = Walk {
        path: Vec::new(),
        out: Vec::new(),
        grads: Some(grads),
    };
    module.visit(&mut walk);
    walk.out
}

struct Walk<'g> {
    path: Vec<(String, String)>,
    out: Vec<NamedParam>,
    grads: Option<&'g Gradients>,
}

impl ModuleVisitor for Walk<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
        // A LoRA adapter (burn's `Lora` reparameterization) of `<module>.weight` is visited as
        // `<module>.weight.lora.{a,b}`; it takes PEFT's names, `<module>.lora_A.weight` and
        // `<module>.lora_B.weight`, and PEFT's layout: burn's `a: [in, r]` and `b: [r, out]`
        // are PEFT's `lora_A: [r, in]` and `lora_B: [out, r]` transposed.
        let lora = match names.as_slice() {
            [prefix @ .., "weight", "lora", part @ ("a" | "b")] => Some((prefix.join("."), *part)),
            _ => None,
        };
        let (name, transposed) = match lora {
            Some((prefix, part)) => (
                format!("{prefix}.lora_{}.weight", part.to_uppercase()),
                true,
            ),
            None => (
                names.join("."),
                D == 2
                    && self.path.last().is_some_and(|(n, container)| {
                        n == "weight" && container == "Struct:Linear"
                    }),
            ),
        };
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let numel: usize = shape.iter().product();
        let grad = self
            .grads
            .and_then(|grads| tensor.grad(grads))
            .map(|g| g.reshape([numel]));
        let trainable = tensor.is_require_grad();
        self.out.push(NamedParam {
            name,
            id: param.id,
            flat: tensor.reshape([numel]),
            shape,
            transposed,
            grad,
            trainable,
        });
    }
}

/// Gradients summed per parameter over any number of backward passes (a layer-by-layer
/// backward makes one per layer), keyed by [`ParamId`], each flattened.
#[derive(Debug, Default, Clone)]
pub struct ParamGrads {
    map: HashMap<ParamId, Tensor<1>>,
}

impl ParamGrads {
    /// No gradients.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the gradients `grads` holds for `module`'s parameters (any sub-module of the model).
    pub fn accumulate<M: Module>(&mut self, module: &M, grads: &Gradients) {
        for p in named_grads(module, grads) {
            if let Some(g) = p.grad {
                self.add(p.id, g);
            }
        }
    }

    /// Adds `grad` (flattened, burn's layout) to parameter `id`'s gradient.
    pub fn add(&mut self, id: ParamId, grad: Tensor<1>) {
        let grad = grad.inner();
        let sum = match self.map.remove(&id) {
            Some(previous) => previous + grad,
            None => grad,
        };
        self.map.insert(id, sum);
    }

    /// Adds every gradient of `other` (micro-batches of one optimiser step).
    pub fn merge(&mut self, other: ParamGrads) {
        for (id, grad) in other.map {
            self.add(id, grad);
        }
    }

    /// The gradient of one parameter (flattened, burn's layout), if it has one.
    pub fn get(&self, id: &ParamId) -> Option<&Tensor<1>> {
        self.map.get(id)
    }

    /// Number of parameters with a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `module`'s parameters with these gradients attached ([`NamedParam::grad`]).
    pub fn named<M: Module>(&self, module: &M) -> Vec<NamedParam> {
        named_params(module)
            .into_iter()
            .map(|mut p| {
                p.grad = self.map.get(&p.id).cloned();
                p
            })
            .collect()
    }
}

/// `module` with the parameters named in `values` (by [`ParamId`], flattened, burn's layout)
/// replaced by those values, each reshaped to its parameter's shape; a parameter that tracked
/// gradients still does. Parameters absent from `values` are kept. This is how an optimiser
/// step writes its result back.
///
/// # Panics
/// When a value's length differs from its parameter's element count.
pub fn replace_params<M: Module>(module: M, values: HashMap<ParamId, Tensor<1>>) -> M {
    let mut replace = Replace { values };
    module.map(&mut replace)
}

struct Replace {
    values: HashMap<ParamId, Tensor<1>>,
}

impl burn::module::ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(value) = self.values.remove(&param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let tracked = tensor.is_require_grad();
        let shape = tensor.shape();
        assert_eq!(
            value.dims()[0],
            shape.num_elements(),
            "replacement for parameter {id} has the wrong size"
        );
        let mut updated = Tensor::from_inner(value.inner().reshape(shape));
        if tracked {
            updated = updated.require_grad();
        }
        Param::from_mapped_value(id, updated, mapper)
    }
}
